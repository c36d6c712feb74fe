-- luacheck over lua/, modules/ and spec/ (ctest lint.luacheck; bench/ and
-- examples/ are clean too).
std = "lua54"
-- Handlers, hooks and C callbacks have fixed signatures (handler(req, ctx),
-- onSend(ctx, req, reply), an inbox's (subject, reply, data)); naming every
-- argument documents the signature even where one is not used.
unused_args = false
-- No column limit yet: lines are wrapped by judgement near 120, and the
-- longer ones are mostly spec data (tokens, JSON fixtures, it() names). A
-- limit belongs with a formatter pass, not a lint exception list.
max_line_length = false
files["spec"] = { std = "+busted" }
-- LuaLS definition files: a class's methods are declared on a local table
-- that nothing reads (the file is never run, only read by the language
-- server and tools/check-annotations.lua).
files["types"] = { ignore = { "241" } }
