-- Deprecated: `validation.schema` is now `hemera.validation.schema`. This
-- shim keeps the old name working for one release (removed in 0.2.0); it
-- warns once per Lua state (require caches it) and returns the new module,
-- so both names give the same table.
io.stderr:write("hemera: require \"validation.schema\" is deprecated, use require \"hemera.validation.schema\"\n")
return require "hemera.validation.schema"
