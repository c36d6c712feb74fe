---@meta hemera.validation.jsonschema
-- JSON Schema (a draft-07 subset) for Hemera payloads (hemera-ajv's counterpart).

---@class Hemera.ValidationJsonschema
---@field ValidationError Hemera.ErrorClass
---@field plugin Hemera.Plugin `hemera:use(J.plugin, opts)`
---@field compiler Hemera.Compiler for `hemera:setSchemaCompiler`
---@field response_compiler Hemera.Compiler for `hemera:setResponseSchemaCompiler`
local M = {}
--- A JSON Schema into a validator.
---@param schema table|boolean
---@param opts? {coerceTypes?: boolean, useDefaults?: boolean, removeAdditional?: boolean|"all"|"failing", ignore?: fun(key: string): boolean, label?: string}
---@return Hemera.Validator
function M.compile(schema, opts) end
--- A request and a response compiler with hemera-ajv's options.
---@param opts? table
---@return Hemera.Compiler compiler, Hemera.Compiler response_compiler
function M.compilers(opts) end
--- A matcher for an ECMAScript regex (the engine of `pattern`), or nil and why.
---@param source string
---@return (fun(s: string): boolean?, string?, string?)? match, string? err
function M.regex(source) end

return M
