"""modelplane.builders."""
