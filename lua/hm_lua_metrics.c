/*
** hm_lua_metrics.c: metric families and series in C, rendered in the
** Prometheus text exposition format 0.0.4, and the process's own numbers.
**
**   core.metrics_registry() -> reg
**   reg:family(kind, name, help, labels, max_series [, buckets]) -> fam
**       kind "counter" | "gauge" | "histogram"; labels a list of names;
**       max_series: label sets kept before the rest share one series whose
**       labels are all "other"; buckets (histograms): increasing upper
**       bounds. Raises on a bad or repeated name, label or bucket.
**   fam:series(v1, ..., vn) -> series, capped: the values of the labels in
**       order (strings or numbers). The second value is true the one time
**       the family goes over max_series (the caller warns).
**   fam:count() -> label sets kept.
**   series:inc([n]) (counters: n >= 0), series:set(v), series:add(v)
**       (gauges), series:observe(v) (histograms), series:value().
**   core.metrics_since(counter, histogram, t0) counts 1 in counter and
**       observes (core.hrtime() - t0) / 1000 seconds in histogram: the
**       request path's one call per request.
**   core.metrics_hooks(server_cells, make_server_cell, client_cells,
**       make_client_cell) -> onResponse, onActFinished: hemera.metrics'
**       hooks, in C (see the section below).
**   reg:render() -> the exposition text of every family with a series.
**   core.process_stats() -> {rss, cpu, fds, start}: resident bytes, CPU
**       seconds (user + system), open descriptors, start time (Unix
**       seconds), from /proc (a memory read, no disk).
**
** Ownership: all of it is Lua userdata. A series holds its family as a
** user value (so the bucket bounds it points at live as long as it does);
** a family holds its series, the registry its families.
*/
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "hm_lua_envelope.h"
#include "hm_lua_private.h"

#define REG_MT "hemera.MetricsRegistry"
#define FAM_MT "hemera.MetricFamily"
#define SER_MT "hemera.MetricSeries"
#define MAX_LABELS 16
#define MAX_BUCKETS 64

enum { K_COUNTER, K_GAUGE, K_HISTOGRAM };
static const char *const kinds[] = {"counter", "gauge", "histogram", NULL};

/* Family user values. */
enum { FU_NAME = 1, FU_HELP, FU_LABELS, FU_LIST, FU_INDEX, FU_OTHER, FU_N };

typedef struct fam {
  int kind;
  int nlabels;
  lua_Integer max_series;
  lua_Integer nseries;
  int nb;
  double bounds[]; /* nb, histograms */
} fam;

/* Series user values: 1 the family, 2 the label text (a="x",b="y"). */
typedef struct ser {
  int kind;
  int nb;
  const double *bounds;
  double value; /* counter, gauge; histogram: the sum */
  uint64_t count;
  uint64_t b[]; /* per bucket (not cumulative) */
} ser;

/* {====================================================================
** Names and text
** ===================================================================== */

static int valid_name(const char *s, int metric) {
  const unsigned char *p = (const unsigned char *)s;
  if (!*p || (*p >= '0' && *p <= '9')) return 0;
  for (; *p; p++) {
    int ok = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
             (*p >= '0' && *p <= '9') || *p == '_' || (metric && *p == ':');
    if (!ok) return 0;
  }
  return 1;
}

/* The shortest text that reads back as v. */
static void fmt_num(char *out, size_t n, double v) {
  if (isnan(v)) { snprintf(out, n, "NaN"); return; }
  if (isinf(v)) { snprintf(out, n, v > 0 ? "+Inf" : "-Inf"); return; }
  if (v == floor(v) && fabs(v) < 9007199254740992.0) {
    snprintf(out, n, "%.0f", v);
    return;
  }
  snprintf(out, n, "%.15g", v);
  if (strtod(out, NULL) != v) snprintf(out, n, "%.17g", v);
}

/* Length of a valid UTF-8 sequence at p (at most n bytes), or 0. */
static size_t utf8_len(const unsigned char *p, size_t n) {
  size_t len, i;
  uint32_t cp;
  if (p[0] < 0x80) return 1;
  if ((p[0] & 0xE0) == 0xC0) { len = 2; cp = p[0] & 0x1F; }
  else if ((p[0] & 0xF0) == 0xE0) { len = 3; cp = p[0] & 0x0F; }
  else if ((p[0] & 0xF8) == 0xF0) { len = 4; cp = p[0] & 0x07; }
  else return 0;
  if (len > n) return 0;
  for (i = 1; i < len; i++) {
    if ((p[i] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (p[i] & 0x3F);
  }
  if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
      (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
      (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return len;
}

/* A growable C buffer: rendering pushes and pops Lua values as it goes,
** which a luaL_Buffer does not allow. Nothing in between can raise. */
typedef struct cbuf {
  char *p;
  size_t len, cap;
  int oom;
} cbuf;

static void cb_add(cbuf *b, const char *s, size_t n) {
  if (b->oom) return;
  if (b->len + n > b->cap) {
    size_t ncap = b->cap ? b->cap : 4096;
    char *np;
    while (ncap < b->len + n) ncap *= 2;
    np = realloc(b->p, ncap);
    if (np == NULL) {
      b->oom = 1;
      return;
    }
    b->p = np;
    b->cap = ncap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
}

static void cb_str(cbuf *b, const char *s) { cb_add(b, s, strlen(s)); }

/* Pushes the buffer's text and frees it; raises (after freeing) on OOM. */
static void cb_push(lua_State *L, cbuf *b) {
  int oom = b->oom;
  if (!oom) lua_pushlstring(L, b->p ? b->p : "", b->len);
  free(b->p);
  b->p = NULL;
  if (oom) luaL_error(L, "not enough memory");
}

/* Adds s escaped for a label value (\\, \", \n), or for HELP text (no \"
** escape). Bytes that are not UTF-8 become U+FFFD: the format is UTF-8. */
static void add_escaped(cbuf *b, const char *s, size_t n, int label) {
  size_t i = 0;
  while (i < n) {
    unsigned char ch = (unsigned char)s[i];
    size_t len;
    if (ch == '\\') { cb_str(b, "\\\\"); i++; continue; }
    if (ch == '\n') { cb_str(b, "\\n"); i++; continue; }
    if (ch == '"' && label) { cb_str(b, "\\\""); i++; continue; }
    len = utf8_len((const unsigned char *)s + i, n - i);
    if (len == 0) {
      cb_str(b, "\xEF\xBF\xBD");
      i++;
    } else {
      cb_add(b, s + i, len);
      i += len;
    }
  }
}

/* }==================================================================== */

/* {====================================================================
** Registry and families
** ===================================================================== */

static int l_registry(lua_State *L) {
  lua_newuserdatauv(L, 1, 2);
  lua_newtable(L); /* families, in order */
  lua_setiuservalue(L, -2, 1);
  lua_newtable(L); /* name -> family */
  lua_setiuservalue(L, -2, 2);
  luaL_setmetatable(L, REG_MT);
  return 1;
}

static ser *new_series(lua_State *L, int famidx, fam *f, const char *labels,
                       size_t llen) {
  ser *s = lua_newuserdatauv(L, sizeof *s + (size_t)f->nb * sizeof(uint64_t),
                             2);
  s->kind = f->kind;
  s->nb = f->nb;
  s->bounds = f->bounds;
  s->value = 0;
  s->count = 0;
  memset(s->b, 0, (size_t)f->nb * sizeof(uint64_t));
  luaL_setmetatable(L, SER_MT);
  lua_pushvalue(L, famidx);
  lua_setiuservalue(L, -2, 1);
  lua_pushlstring(L, labels, llen);
  lua_setiuservalue(L, -2, 2);
  return s;
}

/* Appends the series on top to the family's list (it stays on top). */
static void list_series(lua_State *L, int famidx) {
  lua_getiuservalue(L, famidx, FU_LIST);
  lua_pushvalue(L, -2);
  lua_rawseti(L, -2, (lua_Integer)luaL_len(L, -2) + 1);
  lua_pop(L, 1);
}

/* reg:family(kind, name, help, labels, max_series [, buckets]) */
static int r_family(lua_State *L) {
  int kind, nlabels, nb = 0, i, famidx;
  const char *name;
  lua_Integer max_series;
  double bounds[MAX_BUCKETS];
  fam *f;
  luaL_checkudata(L, 1, REG_MT);
  kind = luaL_checkoption(L, 2, NULL, kinds);
  name = luaL_checkstring(L, 3);
  luaL_checkstring(L, 4); /* help */
  luaL_checktype(L, 5, LUA_TTABLE);
  max_series = luaL_checkinteger(L, 6);
  if (!valid_name(name, 1))
    return luaL_error(L,
                      "invalid metric name '%s' (letters, digits, _ and :, "
                      "not starting with a digit)",
                      name);
  if (max_series < 1)
    return luaL_error(L, "metric '%s': maxSeries must be >= 1, got %I", name,
                      max_series);
  nlabels = (int)luaL_len(L, 5);
  if (nlabels > MAX_LABELS)
    return luaL_error(L, "metric '%s': more than %d labels", name,
                      MAX_LABELS);
  for (i = 1; i <= nlabels; i++) {
    const char *ln;
    int j;
    lua_rawgeti(L, 5, i);
    ln = lua_tostring(L, -1);
    if (lua_type(L, -1) != LUA_TSTRING || !valid_name(ln, 0) ||
        strncmp(ln, "__", 2) == 0 ||
        (kind == K_HISTOGRAM && strcmp(ln, "le") == 0))
      return luaL_error(L,
                        "metric '%s': invalid label name '%s' (letters, "
                        "digits and _, not starting with a digit or __%s)",
                        name, luaL_tolstring(L, -1, NULL),
                        kind == K_HISTOGRAM ? ", not le" : "");
    for (j = 1; j < i; j++) {
      lua_rawgeti(L, 5, j);
      if (lua_rawequal(L, -1, -2))
        return luaL_error(L, "metric '%s': label '%s' given twice", name, ln);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  if (kind == K_HISTOGRAM) {
    luaL_checktype(L, 7, LUA_TTABLE);
    nb = (int)luaL_len(L, 7);
    if (nb < 1 || nb > MAX_BUCKETS)
      return luaL_error(L, "metric '%s': 1 to %d buckets, got %d", name,
                        MAX_BUCKETS, nb);
    for (i = 0; i < nb; i++) {
      int isnum;
      lua_rawgeti(L, 7, i + 1);
      bounds[i] = lua_tonumberx(L, -1, &isnum);
      lua_pop(L, 1);
      if (!isnum || !isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1]))
        return luaL_error(L,
                          "metric '%s': bucket %d must be a finite number "
                          "above the one before it",
                          name, i + 1);
    }
  }
  lua_getiuservalue(L, 1, 2);
  if (lua_getfield(L, -1, name) != LUA_TNIL)
    return luaL_error(L, "metric '%s' is already registered", name);
  lua_pop(L, 2);
  f = lua_newuserdatauv(L, sizeof *f + (size_t)nb * sizeof(double), FU_N - 1);
  famidx = lua_gettop(L);
  f->kind = kind;
  f->nlabels = nlabels;
  f->max_series = max_series;
  f->nseries = 0;
  f->nb = nb;
  memcpy(f->bounds, bounds, (size_t)nb * sizeof(double));
  luaL_setmetatable(L, FAM_MT);
  lua_pushvalue(L, 3);
  lua_setiuservalue(L, famidx, FU_NAME);
  lua_pushvalue(L, 4);
  lua_setiuservalue(L, famidx, FU_HELP);
  lua_createtable(L, nlabels, 0);
  for (i = 1; i <= nlabels; i++) {
    lua_rawgeti(L, 5, i);
    lua_rawseti(L, -2, i);
  }
  lua_setiuservalue(L, famidx, FU_LABELS);
  lua_newtable(L);
  lua_setiuservalue(L, famidx, FU_LIST);
  lua_newtable(L);
  lua_setiuservalue(L, famidx, FU_INDEX);
  if (nlabels == 0) {
    /* No labels: the one series exists from the start (a 0 is a value). */
    new_series(L, famidx, f, "", 0);
    list_series(L, famidx);
    lua_pushliteral(L, "");
    lua_pushvalue(L, -2);
    lua_getiuservalue(L, famidx, FU_INDEX);
    lua_insert(L, -3);
    lua_rawset(L, -3);
    lua_pop(L, 2);
    f->nseries = 1;
  }
  lua_getiuservalue(L, 1, 1);
  lua_pushvalue(L, famidx);
  lua_rawseti(L, -2, (lua_Integer)luaL_len(L, -2) + 1);
  lua_pop(L, 1);
  lua_getiuservalue(L, 1, 2);
  lua_pushvalue(L, famidx);
  lua_setfield(L, -2, name);
  lua_pop(L, 1);
  return 1;
}

/* Pushes the label text (name="value",...) of the values at 2..n+1, or
** with every value "other". */
static void push_labels(lua_State *L, int famidx, int n, int other) {
  cbuf b = {NULL, 0, 0, 0};
  int i, names;
  lua_getiuservalue(L, famidx, FU_LABELS);
  names = lua_gettop(L);
  for (i = 1; i <= n; i++) {
    size_t len;
    const char *v;
    if (i > 1) cb_add(&b, ",", 1);
    lua_rawgeti(L, names, i);
    v = lua_tolstring(L, -1, &len); /* the names table keeps it */
    lua_pop(L, 1);
    cb_add(&b, v, len);
    cb_add(&b, "=\"", 2);
    if (other) {
      cb_str(&b, "other");
    } else {
      v = lua_tolstring(L, 1 + i, &len);
      add_escaped(&b, v, len, 1);
    }
    cb_add(&b, "\"", 1);
  }
  lua_pop(L, 1);
  cb_push(L, &b);
}

/* fam:series(v1, ..., vn) -> series [, true the first time over the cap] */
static int f_series(lua_State *L) {
  fam *f = luaL_checkudata(L, 1, FAM_MT);
  int n = f->nlabels, i, key;
  size_t llen;
  const char *lt;
  luaL_Buffer b;
  if (lua_gettop(L) != n + 1) {
    lua_getiuservalue(L, 1, FU_NAME);
    return luaL_error(L, "metric '%s' has %d label(s), got %d value(s)",
                      lua_tostring(L, -1), n, lua_gettop(L) - 2);
  }
  if (n == 0) {
    lua_getiuservalue(L, 1, FU_LIST);
    lua_rawgeti(L, -1, 1);
    return 1;
  }
  for (i = 2; i <= n + 1; i++) {
    int t = lua_type(L, i);
    if (t != LUA_TSTRING && t != LUA_TNUMBER) {
      lua_getiuservalue(L, 1, FU_LABELS);
      lua_rawgeti(L, -1, i - 1);
      lua_getiuservalue(L, 1, FU_NAME);
      return luaL_error(L,
                        "metric '%s': label '%s' must be a string, got %s",
                        lua_tostring(L, -1), lua_tostring(L, -2),
                        luaL_typename(L, i));
    }
    lua_tostring(L, i); /* numbers become their text, in place */
  }
  /* The key: each value with its length, so no value can fake another. */
  luaL_buffinit(L, &b);
  for (i = 2; i <= n + 1; i++) {
    size_t len;
    const char *v = lua_tolstring(L, i, &len);
    char num[24];
    snprintf(num, sizeof num, "%zu:", len);
    luaL_addstring(&b, num);
    luaL_addlstring(&b, v, len);
  }
  luaL_pushresult(&b);
  key = lua_gettop(L);
  lua_getiuservalue(L, 1, FU_INDEX);
  lua_pushvalue(L, key);
  if (lua_rawget(L, -2) != LUA_TNIL) return 1;
  lua_settop(L, key);
  if (f->nseries >= f->max_series) {
    if (lua_getiuservalue(L, 1, FU_OTHER) != LUA_TNIL) return 1;
    lua_pop(L, 1);
    /* The first label set over the cap: one "other" series from now on. */
    push_labels(L, 1, n, 1);
    lt = lua_tolstring(L, -1, &llen);
    new_series(L, 1, f, lt, llen);
    list_series(L, 1);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, 1, FU_OTHER);
    lua_pushboolean(L, 1);
    return 2;
  }
  push_labels(L, 1, n, 0);
  lt = lua_tolstring(L, -1, &llen);
  new_series(L, 1, f, lt, llen);
  list_series(L, 1);
  lua_getiuservalue(L, 1, FU_INDEX);
  lua_pushvalue(L, key);
  lua_pushvalue(L, -3); /* the series */
  lua_rawset(L, -3);
  lua_pop(L, 1);
  f->nseries++;
  return 1;
}

static int f_count(lua_State *L) {
  fam *f = luaL_checkudata(L, 1, FAM_MT);
  lua_pushinteger(L, f->nseries);
  return 1;
}

/* }==================================================================== */

/* {====================================================================
** Series
** ===================================================================== */

static void observe(ser *s, double v) {
  int i;
  for (i = 0; i < s->nb; i++)
    if (v <= s->bounds[i]) break;
  if (i < s->nb) s->b[i]++;
  s->count++;
  s->value += v;
}

static ser *check_kind(lua_State *L, int kind, const char *what) {
  ser *s = luaL_checkudata(L, 1, SER_MT);
  if (s->kind != kind)
    luaL_error(L, "%s is for %ss, not %ss", what, kinds[kind], kinds[s->kind]);
  return s;
}

static int s_inc(lua_State *L) {
  ser *s = luaL_checkudata(L, 1, SER_MT);
  lua_Number n = luaL_optnumber(L, 2, 1);
  if (s->kind == K_HISTOGRAM)
    return luaL_error(L, "inc is for counters and gauges, not histograms");
  if (s->kind == K_COUNTER && !(n >= 0))
    return luaL_error(L, "a counter only goes up: inc(%f)", (double)n);
  s->value += n;
  return 0;
}

static int s_set(lua_State *L) {
  ser *s = check_kind(L, K_GAUGE, "set");
  s->value = luaL_checknumber(L, 2);
  return 0;
}

static int s_add(lua_State *L) {
  ser *s = check_kind(L, K_GAUGE, "add");
  s->value += luaL_checknumber(L, 2);
  return 0;
}

static int s_observe(lua_State *L) {
  ser *s = check_kind(L, K_HISTOGRAM, "observe");
  lua_Number v = luaL_checknumber(L, 2);
  if (isnan(v)) return luaL_error(L, "observe: value is NaN");
  observe(s, v);
  return 0;
}

static int s_value(lua_State *L) {
  ser *s = luaL_checkudata(L, 1, SER_MT);
  if (s->kind == K_HISTOGRAM) {
    lua_pushinteger(L, (lua_Integer)s->count);
    lua_pushnumber(L, s->value);
    return 2;
  }
  lua_pushnumber(L, s->value);
  return 1;
}

/* core.metrics_since(counter, histogram, t0_ms) */
static int l_since(lua_State *L) {
  ser *c = lua_touserdata(L, 1), *h = lua_touserdata(L, 2);
  lua_Number t0 = luaL_checknumber(L, 3);
  double d;
  /* The request path calls this once per request: the metatable checks
  ** are what luaL_checkudata does, without the name lookup each time. */
  if (c == NULL || h == NULL || !lua_getmetatable(L, 1) ||
      !lua_getmetatable(L, 2) || !lua_rawequal(L, -1, -2) ||
      (luaL_getmetatable(L, SER_MT), !lua_rawequal(L, -1, -2)) ||
      c->kind != K_COUNTER || h->kind != K_HISTOGRAM)
    return luaL_error(L, "metrics_since: expected a counter and a histogram");
  c->value += 1;
  d = ((double)uv_hrtime() / 1e6 - t0) / 1000.0;
  observe(h, d < 0 ? 0 : d);
  return 0;
}

/* {======== the plugin's hooks, in C: they run for every request ========
** A cell is {ok, error, histogram} (server) or {ok, error, timeout,
** histogram} (client): series made by the plugin's make_cell(key, ctx),
** which also stores the cell in `cells` under key (or not, past the cap). */

static ser *cell_series(lua_State *L, int cell, int k) {
  ser *s;
  lua_rawgeti(L, cell, k);
  s = lua_touserdata(L, -1);
  lua_pop(L, 1); /* the cell keeps it */
  return s;
}

static void count_since(ser *c, ser *h, double t0) {
  double d = ((double)uv_hrtime() / 1e6 - t0) / 1000.0;
  if (c == NULL || h == NULL) return;
  c->value += 1;
  observe(h, d < 0 ? 0 : d);
}

/* Pushes cells[key] at key_idx, or make_cell(key, ctx)'s. */
static int get_cell(lua_State *L, int key_idx, int ctx_idx) {
  if (!lua_isnil(L, key_idx)) {
    lua_pushvalue(L, key_idx);
    if (lua_rawget(L, lua_upvalueindex(1)) == LUA_TTABLE) return lua_gettop(L);
    lua_pop(L, 1);
  }
  lua_pushvalue(L, lua_upvalueindex(2));
  lua_pushvalue(L, key_idx);
  lua_pushvalue(L, ctx_idx);
  lua_call(L, 2, 1);
  luaL_checktype(L, -1, LUA_TTABLE);
  return lua_gettop(L);
}

/* onResponse(ctx, reply). Upvalues: cells, make_cell, hm_ctx, "_msg",
** "matchedAction", "error". */
static int server_hook(lua_State *L) {
  hm_ctx *ctx = lua_touserdata(L, lua_upvalueindex(3));
  hm_lmsg *g;
  int cell, err;
  lua_settop(L, 2);
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_pushvalue(L, lua_upvalueindex(4));
  if (lua_rawget(L, 1) != LUA_TUSERDATA) return 0; /* 3: the message */
  g = hm_env_check_msg(L, ctx, 3);
  lua_pushvalue(L, lua_upvalueindex(5));
  lua_rawget(L, 1); /* 4: the action, or nil */
  cell = get_cell(L, 4, 1);
  lua_pushvalue(L, lua_upvalueindex(6));
  /* Reply:send sets error in the reply itself (hemera.reply). */
  err = lua_istable(L, 2) && lua_rawget(L, 2) != LUA_TNIL &&
        lua_toboolean(L, -1);
  count_since(cell_series(L, cell, err ? 2 : 1), cell_series(L, cell, 3),
              g->arrived);
  return 0;
}

/* onActFinished(actx). Upvalues: cells, make_cell, "method",
** "responseError", "_ts", "name", "TimeoutError". */
static int client_hook(lua_State *L) {
  int cell, k = 1;
  double t0;
  lua_settop(L, 1);
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_pushvalue(L, lua_upvalueindex(3));
  lua_rawget(L, 1); /* 2: the method string */
  cell = get_cell(L, 2, 1);
  lua_pushvalue(L, lua_upvalueindex(4));
  if (lua_rawget(L, 1) != LUA_TNIL) {
    k = 2;
    if (lua_istable(L, -1)) {
      lua_pushvalue(L, lua_upvalueindex(6));
      lua_gettable(L, -2);
      if (lua_rawequal(L, -1, lua_upvalueindex(7))) k = 3;
    }
  }
  lua_pushvalue(L, lua_upvalueindex(5));
  lua_rawget(L, 1);
  t0 = lua_tonumber(L, -1);
  count_since(cell_series(L, cell, k), cell_series(L, cell, 4), t0);
  return 0;
}

/* core.metrics_hooks(server_cells, make_server_cell, client_cells,
** make_client_cell) -> onResponse hook, onActFinished hook */
static int l_hooks(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  luaL_checktype(L, 3, LUA_TTABLE);
  luaL_checktype(L, 4, LUA_TFUNCTION);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_pushlightuserdata(L, hm_ctx_get(L));
  lua_pushliteral(L, "_msg");
  lua_pushliteral(L, "matchedAction");
  lua_pushliteral(L, "error");
  lua_pushcclosure(L, server_hook, 6);
  lua_pushvalue(L, 3);
  lua_pushvalue(L, 4);
  lua_pushliteral(L, "method");
  lua_pushliteral(L, "responseError");
  lua_pushliteral(L, "_ts");
  lua_pushliteral(L, "name");
  lua_pushliteral(L, "TimeoutError");
  lua_pushcclosure(L, client_hook, 7);
  return 2;
}
/* }======== */

/* }==================================================================== */

/* {====================================================================
** Rendering
** ===================================================================== */

static void add_num(cbuf *b, double v) {
  char num[40];
  fmt_num(num, sizeof num, v);
  cb_str(b, num);
}

static void add_sample(cbuf *b, const char *name, const char *suffix,
                       const char *labels, size_t llen, const char *le,
                       double v) {
  cb_str(b, name);
  cb_str(b, suffix);
  if (llen || le) {
    cb_add(b, "{", 1);
    cb_add(b, labels, llen);
    if (le) {
      if (llen) cb_add(b, ",", 1);
      cb_str(b, "le=\"");
      cb_str(b, le);
      cb_add(b, "\"", 1);
    }
    cb_add(b, "}", 1);
  }
  cb_add(b, " ", 1);
  add_num(b, v);
  cb_add(b, "\n", 1);
}

/* reg:render() -> text. Families without a series are left out. Nothing
** from here to cb_push can raise (no Lua allocation), so the C buffer
** cannot leak. */
static int r_render(lua_State *L) {
  cbuf b = {NULL, 0, 0, 0};
  lua_Integer nf, i, j, ns;
  luaL_checkudata(L, 1, REG_MT);
  lua_settop(L, 1);
  lua_getiuservalue(L, 1, 1); /* 2: the families */
  nf = (lua_Integer)lua_rawlen(L, 2);
  for (i = 1; i <= nf; i++) {
    fam *f;
    const char *name, *help;
    size_t hlen;
    lua_rawgeti(L, 2, i);                /* 3: family */
    f = lua_touserdata(L, 3);
    lua_getiuservalue(L, 3, FU_LIST);    /* 4 */
    ns = (lua_Integer)lua_rawlen(L, 4);
    lua_getiuservalue(L, 3, FU_NAME);    /* 5 */
    lua_getiuservalue(L, 3, FU_HELP);    /* 6 */
    name = lua_tostring(L, 5);
    help = lua_tolstring(L, 6, &hlen);
    if (ns > 0) {
      cb_str(&b, "# HELP ");
      cb_str(&b, name);
      cb_add(&b, " ", 1);
      add_escaped(&b, help, hlen, 0);
      cb_str(&b, "\n# TYPE ");
      cb_str(&b, name);
      cb_add(&b, " ", 1);
      cb_str(&b, kinds[f->kind]);
      cb_add(&b, "\n", 1);
    }
    for (j = 1; j <= ns; j++) {
      ser *s;
      const char *labels;
      size_t llen;
      lua_rawgeti(L, 4, j);
      s = lua_touserdata(L, -1);
      lua_getiuservalue(L, -1, 2);
      labels = lua_tolstring(L, -1, &llen);
      lua_pop(L, 2); /* the family's list keeps both alive */
      if (s->kind != K_HISTOGRAM) {
        add_sample(&b, name, "", labels, llen, NULL, s->value);
      } else {
        uint64_t cum = 0;
        int k;
        char le[40];
        for (k = 0; k < s->nb; k++) {
          cum += s->b[k];
          fmt_num(le, sizeof le, s->bounds[k]);
          add_sample(&b, name, "_bucket", labels, llen, le, (double)cum);
        }
        add_sample(&b, name, "_bucket", labels, llen, "+Inf",
                   (double)s->count);
        add_sample(&b, name, "_sum", labels, llen, NULL, s->value);
        add_sample(&b, name, "_count", labels, llen, NULL, (double)s->count);
      }
    }
    lua_settop(L, 2);
  }
  cb_push(L, &b);
  return 1;
}

/* }==================================================================== */

/* {====================================================================
** Process numbers
** ===================================================================== */

static int l_process_stats(lua_State *L) {
  long page = sysconf(_SC_PAGESIZE), tck = sysconf(_SC_CLK_TCK);
  struct rusage ru;
  double rss = -1, start = -1;
  lua_Integer fds = -1;
  FILE *f;
  DIR *d;
  f = fopen("/proc/self/statm", "r");
  if (f) {
    unsigned long size, res;
    if (fscanf(f, "%lu %lu", &size, &res) == 2) rss = (double)res * page;
    fclose(f);
  }
  f = fopen("/proc/self/stat", "r");
  if (f) {
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    char *p;
    buf[n] = '\0';
    fclose(f);
    /* Field 22 (starttime, clock ticks after boot) counts from after the
    ** ")" that ends the command name, which may hold spaces. */
    p = strrchr(buf, ')');
    if (p) {
      unsigned long long st = 0;
      int field = 2;
      char *tok = p + 1;
      while (*tok && field < 22) {
        while (*tok == ' ') tok++;
        field++;
        if (field == 22) {
          st = strtoull(tok, NULL, 10);
          break;
        }
        while (*tok && *tok != ' ') tok++;
      }
      f = fopen("/proc/stat", "r");
      if (f && field == 22) {
        char line[256];
        while (fgets(line, sizeof line, f)) {
          unsigned long long btime;
          if (sscanf(line, "btime %llu", &btime) == 1) {
            start = (double)btime + (double)st / (double)tck;
            break;
          }
        }
      }
      if (f) fclose(f);
    }
  }
  d = opendir("/proc/self/fd");
  if (d) {
    struct dirent *e;
    fds = 0;
    while ((e = readdir(d)) != NULL)
      if (e->d_name[0] != '.') fds++;
    closedir(d);
    fds--; /* the descriptor opendir itself holds */
  }
  lua_createtable(L, 0, 4);
  lua_pushnumber(L, rss);
  lua_setfield(L, -2, "rss");
  getrusage(RUSAGE_SELF, &ru);
  lua_pushnumber(L, (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                        (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
  lua_setfield(L, -2, "cpu");
  lua_pushinteger(L, fds);
  lua_setfield(L, -2, "fds");
  lua_pushnumber(L, start);
  lua_setfield(L, -2, "start");
  return 1;
}

/* }==================================================================== */

static const luaL_Reg reg_methods[] = {
    {"family", r_family}, {"render", r_render}, {NULL, NULL}};
static const luaL_Reg fam_methods[] = {
    {"series", f_series}, {"count", f_count}, {NULL, NULL}};
static const luaL_Reg ser_methods[] = {
    {"inc", s_inc},         {"set", s_set},     {"add", s_add},
    {"observe", s_observe}, {"value", s_value}, {NULL, NULL}};

static void meta(lua_State *L, const char *name, const luaL_Reg *methods) {
  luaL_newmetatable(L, name);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

void hm_lua_open_metrics(lua_State *L) {
  meta(L, REG_MT, reg_methods);
  meta(L, FAM_MT, fam_methods);
  meta(L, SER_MT, ser_methods);
  lua_pushcfunction(L, l_registry);
  lua_setfield(L, -2, "metrics_registry");
  lua_pushcfunction(L, l_since);
  lua_setfield(L, -2, "metrics_since");
  lua_pushcfunction(L, l_hooks);
  lua_setfield(L, -2, "metrics_hooks");
  lua_pushcfunction(L, l_process_stats);
  lua_setfield(L, -2, "process_stats");
}
