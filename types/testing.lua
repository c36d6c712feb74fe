---@meta hemera.testing
-- hemera-testsuite's part: helpers for busted suites on real nats-server processes.

---@class Hemera.TestServer
---@field url string
---@field port integer
---@field pid integer
---@field running boolean
local Server = {}
---@param sig? string TERM, then KILL after 5 s
function Server:stop(sig) end
function Server:kill() end
---@param config? string
function Server:restart(config) end
---@return string
function Server:log_text() end
---@param text string
---@param count? integer
function Server:wait_log(text, count) end
---@return table
function Server:connz() end
---@return table
function Server:routez() end
---@param name string
---@return boolean
function Server:has_client(name) end

---@class Hemera.TestCluster
---@field nodes Hemera.TestServer[]
---@field urls string[]
local Cluster = {}
---@param client_name string
---@return Hemera.TestServer?
function Cluster:node_of(client_name) end
---@param except? integer
---@return string[]
function Cluster:running_urls(except) end
function Cluster:stop() end

---@class Hemera.Testing
local M = {}
--- A nats-server on 127.0.0.1 with a free port.
---@param opts? {monitor?: boolean, jetstream?: boolean, config?: string, args?: string[]}
---@return Hemera.TestServer
function M.start_server(opts) end
--- `fn(srv)`; the server is stopped afterwards.
---@param opts table|fun(srv: Hemera.TestServer)
---@param fn? fun(srv: Hemera.TestServer)
function M.with_server(opts, fn) end
--- `n` monitored servers routed to each other.
---@param n integer
---@param opts? {config?: string}
---@return Hemera.TestCluster
function M.start_cluster(n, opts) end
--- Kills every server this module started.
function M.stop_all() end
---@param pid integer
---@return boolean
function M.alive(pid) end
---@param pid integer
---@param limit_ms integer
---@return boolean
function M.wait_gone(pid, limit_ms) end
--- The URL of the suite's shared server.
---@return string
function M.url() end
--- The suite's private shared server, or nil.
---@return Hemera.TestServer?
function M.shared_server() end
--- `Hemera.new(opts)` with `servers = testing.url()`.
---@param opts? Hemera.Options
---@return Hemera
function M.new(opts) end
--- Runs `body()` in a Hemera coroutine, then closes every instance.
---@param body function
---@param limit_ms? integer
function M.run(body, limit_ms) end
--- A connected raw `hemera.core` connection.
---@param opts string|table
---@param on_event? function
---@return userdata
function M.raw(opts, on_event) end
--- Closes the raw connections now.
function M.close_raw() end
--- A topic unique to this process and call.
---@param base? string
---@return string
function M.topic(base) end
--- `Hemera.future`.
---@return Hemera.Future
function M.future() end
--- A custom logger that records: `lg.records`, `lg:find`, `lg:count`, `lg:wait`, `lg:text`.
---@return table
function M.logger() end
--- A stream for the built-in logger: `st.lines`, `st:text()`, `st:records()`.
---@return table
function M.stream() end
--- Any value as text.
---@param v any
---@return string
function M.dump(v) end

return M
