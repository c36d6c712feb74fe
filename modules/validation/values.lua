-- Deprecated: `validation.values` is now `hemera.validation.values`. This
-- shim keeps the old name working for one release (removed in 0.2.0); it
-- warns once per Lua state (require caches it) and returns the new module,
-- so both names give the same table.
io.stderr:write("hemera: require \"validation.values\" is deprecated, use require \"hemera.validation.values\"\n")
return require "hemera.validation.values"
