-- Argo CD health of a modelplane.io ModelDeployment (Lua 5.1, as Argo CD runs it).
--
-- Healthy     Ready is True for the current generation (status.observedGeneration equals
--             metadata.generation) and no rollout is under way.
-- Progressing the operator has not observed the latest spec yet, or the phase is Pending,
--             Provisioning, Loading or Updating (also: no status at all yet).
-- Degraded    Ready is False for a reason that needs a change to the spec, the cluster or a
--             conflicting object (TERMINAL: the operator's FailureReason enum, message
--             "<reason>: <message>"), or the phase is Failed or Degraded.
-- Suspended   phase ScaledToZero: no replicas until traffic arrives.
--
-- TERMINAL is modelplane.api.enums.FailureReason, one entry per reason, sorted; a unit test
-- (tests/unit/test_argocd_health.py) fails when the two differ.
local TERMINAL = {
  AcceleratorRequired = true,
  AdapterLoadFailed = true,
  BaseNotFound = true,
  BaseNotReady = true,
  CatalogModelRequired = true,
  ChildConflict = true,
  ContextTooLong = true,
  EngineOptionUnsupported = true,
  EngineUnsupported = true,
  InternalError = true,
  InvalidBase = true,
  InvalidGPUCount = true,
  InvalidModelSettings = true,
  InvalidName = true,
  InvalidParallelism = true,
  ModelTooLarge = true,
  NoAcceleratorClass = true,
  PrecisionUnsupported = true,
  ToolParserRequired = true,
  Unknown = true,
  UnknownModel = true,
  UnknownToolParser = true,
  WriteRejected = true,
}
local PROGRESSING = { Pending = true, Provisioning = true, Loading = true, Updating = true }

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  if c ~= nil and c.reason ~= nil then
    return c.reason
  end
  return fallback
end

local hs = {}
local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local phase = status.phase or ""
local ready = condition(status, "Ready")

-- A terminal reason first: the operator reports those with phase Failed (or Degraded), and
-- the reason says what to fix better than the phase does.
if ready ~= nil and ready.status == "False" and TERMINAL[ready.reason] then
  hs.status = "Degraded"
  hs.message = describe(ready, ready.reason)
  return hs
end
if phase == "Failed" or phase == "Degraded" then
  hs.status = "Degraded"
  hs.message = phase .. ": " .. describe(ready, "see the ModelDeployment's conditions")
  return hs
end
if phase == "ScaledToZero" then
  hs.status = "Suspended"
  hs.message = "Scaled to zero; scales up on the next request"
  return hs
end
if PROGRESSING[phase] then
  hs.status = "Progressing"
  hs.message = phase .. ": " .. describe(ready, "rolling out")
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = "Ready " .. (status.ready or tostring(status.readyReplicas or 0))
  return hs
end
hs.status = "Progressing"
hs.message = describe(ready, "Waiting for the Ready condition")
return hs
