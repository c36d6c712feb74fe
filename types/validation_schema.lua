---@meta hemera.validation.schema
-- Joi-style payload schemas (hemera-joi's counterpart). Every rule returns a
-- new schema; validation returns a new value or `nil, err`.

---@alias Hemera.Validator fun(value: any, ctx?: Hemera.Context): any, Hemera.Error?
---@alias Hemera.Compiler fun(schema: table, def?: Hemera.Definition): Hemera.Validator?

---@class Hemera.Schema
local Schema = {}
---@return Hemera.Schema
function Schema:required() end
---@return Hemera.Schema
function Schema:optional() end
---@param v any
---@return Hemera.Schema
function Schema:default(v) end
---@param ... any
---@return Hemera.Schema
function Schema:valid(...) end
---@param ... any
---@return Hemera.Schema
function Schema:allow(...) end
---@param n number
---@return Hemera.Schema
function Schema:min(n) end
---@param n number
---@return Hemera.Schema
function Schema:max(n) end
---@param n integer
---@return Hemera.Schema
function Schema:length(n) end
---@param p string a Lua pattern, e.g. "^%d+$"
---@param name? string replaces the pattern in messages
---@return Hemera.Schema
function Schema:pattern(p, name) end
---@param fn fun(value: any): boolean?, string? true, or false/nil and a message
---@param name? string the rule name in errors, default "custom"
---@return Hemera.Schema
function Schema:custom(fn, name) end
---@param flag? boolean
---@return Hemera.Schema
function Schema:coerce(flag) end
--- Tables: whether keys without a schema are allowed (true, the default) or rejected.
---@param flag? boolean
---@return Hemera.Schema
function Schema:unknown(flag) end
---@param fields table<string, Hemera.Schema>
---@return Hemera.Schema
function Schema:keys(fields) end
---@return table
function Schema:describe() end
---@param value any
---@param opts? table
---@return any value, Hemera.Error? err
function Schema:validate(value, opts) end

---@class Hemera.ValidationSchema
---@field ValidationError Hemera.ErrorClass
---@field null lightuserdata
---@field plugin Hemera.Plugin `hemera:use(S.plugin, opts)`
---@field compiler Hemera.Compiler for `hemera:setSchemaCompiler`
---@field response_compiler Hemera.Compiler for `hemera:setResponseSchemaCompiler`
local M = {}
---@param v any
---@return boolean
function M.is_schema(v) end
---@return Hemera.Schema
function M.string() end
---@return Hemera.Schema
function M.number() end
---@return Hemera.Schema
function M.integer() end
---@return Hemera.Schema
function M.boolean() end
---@return Hemera.Schema
function M.any() end
---@param fields? table<string, Hemera.Schema>
---@return Hemera.Schema
function M.object(fields) end
--- `S.object`.
---@param fields? table<string, Hemera.Schema>
---@return Hemera.Schema
function M.table(fields) end
---@param item? Hemera.Schema
---@return Hemera.Schema
function M.array(item) end
--- A schema, or a table of `field -> schema`, into a validator.
---@param spec Hemera.Schema|table<string, Hemera.Schema>
---@param opts? table
---@return Hemera.Validator
function M.compile(spec, opts) end
--- A request and a response compiler with hemera-joi's options.
---@param opts? table
---@return Hemera.Compiler compiler, Hemera.Compiler response_compiler
function M.compilers(opts) end

return M
