/*
 * lua: a router plugin that ranks candidates with an operator-written Lua 5.4 policy.
 *
 * Each instance reads its policy file once (a reload is a new instance) and keeps a small
 * pool of sandboxed lua_States running it, so rank() can be called from several threads at
 * once: a caller takes a state from a mutex-protected free list (the one it used last, when
 * free), runs the policy without any lock held, and gives the state back. The pool grows on
 * demand up to LR_MAX_STATES.
 *
 * Sandbox (per state, made in state_new only):
 *   - a lua_Alloc that counts bytes and refuses past memory_kb (HAProxy's hlua_alloc), and
 *     keeps freed small blocks for the state's own reuse;
 *   - only base, string, table, math and utf8 are opened, and the policy runs in its own
 *     _ENV built from an allow-list (Redis's script_lua.c): no load, require, io, os, debug;
 *   - text chunks only (luaL_loadbufferx mode "t");
 *   - a count hook every LR_HOOK_EVERY instructions enforces the per-call instruction budget
 *     and wall-clock deadline. Once a limit is hit the hook fires on every instruction, so a
 *     policy's own pcall cannot swallow the error and carry on.
 *
 * Everything that can raise (building the argument tables, the policy, reading its answer)
 * runs inside one lua_pcall with a message handler, so no error longjmps past C code that
 * holds malloc'ed memory. A failure never fails the request: rank returns COMPASS_EPLUGIN
 * with "file:line: message", counts compass_lua_errors_total{policy="file"} and logs a
 * warning; the core then falls back to the route's default strategy.
 */
#include <compass/plugin.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LR_MAX_STATES 8          /* lua_States per instance, at most */
#define LR_HOOK_EVERY 1000       /* instructions between two hook calls */
#define LR_MAX_POLICY (1u << 20) /* largest policy file read, bytes */
#define LR_MIN_MEMORY_KB 64      /* an empty state with the libraries needs ~25 KB */
#define LR_STACK_CANDS 64        /* candidates handled with stack buffers */
#define LR_VIEW_ROOM 1           /* own fields a view holds before it must grow (c.cost) */
#define LR_ROOM_CALLS 256        /* calls with roomy views before bare ones are tried again */
#define LR_CLASS_SHIFT 4         /* the allocator's size classes are 16 bytes apart */
#define LR_SMALL_MAX 512         /* blocks up to this size are kept for reuse when freed */
#define LR_N_CLASSES (LR_SMALL_MAX >> LR_CLASS_SHIFT)
#define LR_CACHE_MAX (128u << 10) /* bytes of freed blocks a state keeps, at most */

/* ---------------------------------------------------------------------------------------- */
/* Options                                                                                   */
/* ---------------------------------------------------------------------------------------- */

typedef struct lr_options {
    const char *policy;
    const char *function;
    int64_t instructions;
    int64_t memory_kb;
    int64_t timeout_ms;
} lr_options;

static const compass_option lr_option_table[] = {
    {"policy", COMPASS_OPT_STRING, NULL, 1, offsetof(lr_options, policy),
     "path of the policy .lua file (read once; a reload makes a new instance)"},
    {"function", COMPASS_OPT_STRING, "route", 0, offsetof(lr_options, function),
     "name of the global function the policy defines: f(request, candidates)"},
    {"instructions", COMPASS_OPT_INT, "100000", 0, offsetof(lr_options, instructions),
     "Lua VM instruction budget per call"},
    {"memory_kb", COMPASS_OPT_INT, "1024", 0, offsetof(lr_options, memory_kb),
     "memory cap per Lua state, KB"},
    {"timeout_ms", COMPASS_OPT_INT, "5", 0, offsetof(lr_options, timeout_ms),
     "wall-clock budget per call, ms (0: none), checked every 1000 instructions"},
    {NULL, 0, NULL, 0, 0, NULL},
};

/* ---------------------------------------------------------------------------------------- */
/* Interned keys: upvalues of the call closure, so table fields are set without hashing a  */
/* C string each time.                                                                       */
/* ---------------------------------------------------------------------------------------- */

#define LR_KEYS(X)                                                                            \
    X(ROUTE, "route")                                                                         \
    X(N_MESSAGES, "n_messages")                                                               \
    X(N_CHARS, "n_chars")                                                                     \
    X(EST_TOKENS, "est_tokens")                                                               \
    X(HAS_TOOLS, "has_tools")                                                                 \
    X(HAS_IMAGES, "has_images")                                                               \
    X(STREAM, "stream")                                                                       \
    X(KEY_ID, "key_id")                                                                       \
    X(METADATA, "metadata")                                                                   \
    X(NOW_MS, "now_ms")                                                                       \
    X(HOUR, "hour")                                                                           \
    X(WEEKDAY, "weekday")                                                                     \
    X(INDEX, "index")                                                                         \
    X(ID, "id")                                                                               \
    X(PROVIDER, "provider")                                                                   \
    X(MODEL, "model")                                                                         \
    X(TIER, "tier")                                                                           \
    X(WEIGHT, "weight")                                                                       \
    X(PRICE_IN, "price_in")                                                                   \
    X(PRICE_OUT, "price_out")                                                                 \
    X(LATENCY_MS, "latency_ms")                                                               \
    X(TTFT_MS, "ttft_ms")                                                                     \
    X(ERROR_RATE, "error_rate")                                                               \
    X(IN_FLIGHT, "in_flight")                                                                 \
    X(CAPACITY, "capacity")                                                                   \
    X(BREAKER, "breaker")                                                                     \
    X(TOOLS, "tools")                                                                         \
    X(VISION, "vision")                                                                       \
    X(JSON, "json")                                                                           \
    X(CONTEXT_WINDOW, "context_window")                                                       \
    X(CLOSED, "closed")                                                                       \
    X(OPEN, "open")                                                                           \
    X(HALF_OPEN, "half_open")

#define LR_KEY_ENUM(sym, text) K_##sym,
enum { LR_KEYS(LR_KEY_ENUM) K_COUNT };
#define LR_KEY_TEXT(sym, text) text,
static const char *const lr_key_text[K_COUNT] = {LR_KEYS(LR_KEY_TEXT)};

/* Upvalues of the call closure: the policy function, the slot table (see lr_state), the
 * last route and key_id strings pushed (see push_cached_str), then the keys. */
#define UPV_FN lua_upvalueindex(1)
#define UPV_SLOTS lua_upvalueindex(2)
#define UPV_ROUTE lua_upvalueindex(3)
#define UPV_KEY_ID lua_upvalueindex(4)
#define UPV_N_FIXED 4
#define UPV_KEY(k) lua_upvalueindex((k) + UPV_N_FIXED + 1)

/* ---------------------------------------------------------------------------------------- */
/* Types                                                                                     */
/* ---------------------------------------------------------------------------------------- */

enum { LIM_NONE = 0, LIM_BUDGET, LIM_TIME };

typedef struct lr_router lr_router;

/*
 * What a state last wrote into the backing table of candidate position i, so a call only
 * rewrites the fields that changed. The string pointers point into Lua strings the backing
 * table holds (Lua strings do not move).
 */
typedef struct lr_slot {
    int valid;
    const char *id, *provider, *model;
    size_t id_len, provider_len, model_len;
    int tier, breaker;
    unsigned caps;
    double weight, price_in, price_out, latency, ttft, error_rate;
    int64_t in_flight, capacity, context_window;
} lr_slot;

typedef struct lr_free {
    struct lr_free *next;
} lr_free;

/* One sandboxed lua_State. Its address sits in the state's extra space. */
typedef struct lr_state {
    lr_router *r;
    lua_State *L;
    struct lr_state *next; /* free list */
    pthread_t owner;       /* the thread that took it last, when has_owner */
    int has_owner;
    size_t used, cap;      /* bytes held by Lua, and the cap */
    int oom;               /* the allocator refused since the call started */
    size_t cached;         /* bytes in cache[] */
    lr_free *cache[LR_N_CLASSES]; /* freed small blocks, by size class */
    int call_ref;          /* registry ref of the call closure */
    int fn_line;           /* line where the policy function is defined */
    lr_slot *slots;        /* C side of the slot table {M1, B1, M2, B2, ...} (an upvalue of
                            * the call closure): per position, the view metatable and the
                            * backing table it reads through; n_slots long */
    size_t n_slots;
    const char *route_p, *key_p; /* bytes of the route and key_id strings in the upvalues */
    size_t route_len, key_len;
    int view_room;         /* own-field room the next call's views get: 0 or LR_VIEW_ROOM */
    int room_calls;        /* calls left before bare views are tried again */
    /* per call */
    int64_t left;          /* instructions left */
    uint64_t start_ns;     /* CLOCK_MONOTONIC at the call's first hook; 0 before */
    int limit;             /* LIM_* once hit */
    int hook_count;        /* current hook interval */
    char limit_msg[256];
    int pos_line;          /* where the hook last saw the policy, for OOM messages */
    char pos_src[LUA_IDSIZE];
    char trace[1024];      /* the last error's traceback, for the debug log */
    /* local-time cache for request.hour / weekday */
    int64_t hour_from, hour_to; /* unix seconds [from, to) the cached values hold for */
    int hour, weekday;
} lr_state;

struct lr_router {
    const compass_host *h;
    char *path;            /* as configured */
    const char *base;      /* basename of path, inside path */
    char *chunkname;       /* "@" base */
    char *func;
    char *labels;          /* policy="base", escaped */
    char *src;
    size_t src_len;
    int fn_line;           /* line where the policy function is defined */
    int64_t instructions;
    uint64_t timeout_ns;
    size_t mem_cap;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    lr_state *free_list;
    int n_states;
};

/* What one rank() call hands to the protected call closure. */
typedef struct lr_call {
    lr_state *s;
    const compass_route_request *rr;
    const compass_candidate *const *cands;
    size_t n;
    size_t *order;
    size_t cap;            /* room in order[] */
    size_t count;          /* written */
    const void **ptrs;     /* identity of the candidate tables */
    unsigned char *seen;
    const void *stack_ptrs[LR_STACK_CANDS];
    unsigned char stack_seen[LR_STACK_CANDS];
    int bad;               /* the policy returned nonsense; msg says what */
    char msg[400];
} lr_call;

static lr_state *state_of(lua_State *L)
{
    lr_state *s;
    memcpy(&s, lua_getextraspace(L), sizeof(s));
    return s;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static char *lr_strdup(const compass_host *h, const char *s, size_t n)
{
    char *p = h->alloc(h, n + 1);
    if (p) {
        if (n)
            memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

/* ---------------------------------------------------------------------------------------- */
/* Allocator and hook                                                                        */
/* ---------------------------------------------------------------------------------------- */

/*
 * Freed small blocks are kept per state, one list per 16-byte size class, and handed out
 * again before malloc is asked: a decision makes and drops a few dozen small tables, and
 * glibc's per-thread cache holds only 7 blocks of a size, so most of them would otherwise
 * take malloc's slow path and its locks. What the lists hold is not counted as used (it is
 * free for this state's Lua) and is bounded by LR_CACHE_MAX, so a state holds at most its
 * cap plus that.
 */
static size_t lr_class_of(size_t n)
{
    return (n - 1) >> LR_CLASS_SHIFT;
}

static void *block_new(lr_state *s, size_t n)
{
    if (n > LR_SMALL_MAX)
        return malloc(n);
    size_t c = lr_class_of(n);
    lr_free *b = s->cache[c];
    if (b) {
        s->cache[c] = b->next;
        s->cached -= (c + 1) << LR_CLASS_SHIFT;
        return b;
    }
    return malloc((c + 1) << LR_CLASS_SHIFT);
}

static void block_drop(lr_state *s, void *p, size_t n)
{
    if (n > LR_SMALL_MAX) {
        free(p);
        return;
    }
    size_t c = lr_class_of(n), cs = (c + 1) << LR_CLASS_SHIFT;
    if (s->cached + cs > LR_CACHE_MAX) {
        free(p);
        return;
    }
    lr_free *b = p;
    b->next = s->cache[c];
    s->cache[c] = b;
    s->cached += cs;
}

/* Frees what the lists hold, once the state is closed. */
static void cache_drain(lr_state *s)
{
    for (size_t c = 0; c < LR_N_CLASSES; c++) {
        while (s->cache[c]) {
            lr_free *b = s->cache[c];
            s->cache[c] = b->next;
            free(b);
        }
    }
    s->cached = 0;
}

/*
 * Counts what the state holds and refuses to grow past the cap (Lua then runs an emergency
 * collection and retries once before raising "not enough memory"). libc rather than
 * h->alloc: this sits on Lua's hot path, and the per-state cap is the accounting that
 * matters here. Lua passes a block's size back as osize, so the size class of a block
 * being freed is known, and a block is never smaller than the class of the size Lua holds
 * it at.
 */
static void *lr_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    lr_state *s = ud;
    if (!ptr)
        osize = 0; /* osize is a type tag for new blocks */
    if (nsize == 0) {
        if (ptr) {
            block_drop(s, ptr, osize);
            s->used -= osize;
        }
        return NULL;
    }
    if (nsize > osize && nsize - osize > s->cap - s->used) {
        s->oom = 1;
        return NULL;
    }
    void *p;
    if (!ptr) {
        p = block_new(s, nsize);
    } else if (osize > LR_SMALL_MAX && nsize > LR_SMALL_MAX) {
        p = realloc(ptr, nsize);
    } else if (osize <= LR_SMALL_MAX && nsize <= LR_SMALL_MAX &&
               lr_class_of(osize) == lr_class_of(nsize)) {
        p = ptr;
    } else {
        p = block_new(s, nsize);
        if (p) {
            memcpy(p, ptr, osize < nsize ? osize : nsize);
            block_drop(s, ptr, osize);
        }
    }
    if (!p) {
        if (ptr && nsize <= osize) {
            /* A failed shrink keeps the larger block; should it go to a list later, it is
             * bigger than that list's blocks need to be, which is safe. */
            s->used -= osize - nsize;
            return ptr;
        }
        s->oom = 1;
        return NULL;
    }
    s->used = s->used - osize + nsize;
    return p;
}

/* [-0, +0, v]: raises once a budget is spent. */
static void lr_hook(lua_State *L, lua_Debug *ar)
{
    lr_state *s = state_of(L);
    if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0) {
        snprintf(s->pos_src, sizeof(s->pos_src), "%s", ar->short_src);
        s->pos_line = ar->currentline;
    }
    if (s->limit == LIM_NONE) {
        s->left -= s->hook_count;
        if (s->left <= 0) {
            s->limit = LIM_BUDGET;
        } else if (s->r->timeout_ns) {
            /* The wall clock starts at the first hook, LR_HOOK_EVERY instructions in: the
             * time before it is a few microseconds at most, and short calls read no clock. */
            uint64_t now = mono_ns();
            if (!s->start_ns)
                s->start_ns = now;
            else if (now - s->start_ns >= s->r->timeout_ns)
                s->limit = LIM_TIME;
        }
        if (s->limit == LIM_NONE)
            return;
        snprintf(s->limit_msg, sizeof(s->limit_msg), "%s:%d: %s", s->pos_src, s->pos_line,
                 s->limit == LIM_BUDGET ? "instruction budget exceeded"
                                        : "time budget exceeded");
        /* From now on every instruction raises, so a pcall in the policy cannot swallow
         * the error and keep running. */
        s->hook_count = 1;
        lua_sethook(L, lr_hook, LUA_MASKCOUNT, 1);
    }
    lua_pushstring(L, s->limit_msg);
    lua_error(L);
}

/* ---------------------------------------------------------------------------------------- */
/* Message handler                                                                           */
/* ---------------------------------------------------------------------------------------- */

/*
 * [-1, +1, m] Makes sure the message starts with "file:line:" of the innermost Lua frame
 * (error("x", 0) and non-string error objects carry none) and keeps a traceback for the
 * debug log.
 */
static int lr_msgh(lua_State *L)
{
    lr_state *s = state_of(L);
    const char *msg = lua_tostring(L, 1);
    if (!msg)
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    lua_Debug ar;
    for (int level = 1; lua_getstack(L, level, &ar); level++) {
        if (!lua_getinfo(L, "Sl", &ar) || ar.currentline <= 0)
            continue;
        size_t sl = strlen(ar.short_src);
        if (!(strncmp(msg, ar.short_src, sl) == 0 && msg[sl] == ':'))
            msg = lua_pushfstring(L, "%s:%d: %s", ar.short_src, ar.currentline, msg);
        break;
    }
    int top = lua_gettop(L);
    if (s && !s->oom) {
        luaL_traceback(L, L, msg, 1);
        snprintf(s->trace, sizeof(s->trace), "%s", lua_tostring(L, -1));
    }
    lua_settop(L, top);
    return 1;
}

/* ---------------------------------------------------------------------------------------- */
/* The compass module and print                                                              */
/* ---------------------------------------------------------------------------------------- */

/* [-2, +0, v] compass.log(level, msg): level is "error", "warn", "info" or "debug". */
static int lr_l_log(lua_State *L)
{
    static const char *const levels[] = {"error", "warn", "info", "debug", NULL};
    int level = luaL_checkoption(L, 1, NULL, levels);
    const char *msg = luaL_checkstring(L, 2);
    lr_state *s = state_of(L);
    s->r->h->log(s->r->h, level, "%s: %s", s->r->base, msg);
    return 0;
}

/* [-0, +1, -] compass.now_ms(): the host's wall clock, ms since the epoch. */
static int lr_l_now_ms(lua_State *L)
{
    lr_state *s = state_of(L);
    lua_pushinteger(L, (lua_Integer)s->r->h->now_ms(s->r->h));
    return 1;
}

/* [-n, +0, m] print(...): one debug log line, arguments joined by tabs. */
static int lr_l_print(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1)
            luaL_addchar(&b, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    lr_state *s = state_of(L);
    s->r->h->log(s->r->h, COMPASS_LOG_DEBUG, "%s: %s", s->r->base, lua_tostring(L, -1));
    return 0;
}

static const luaL_Reg lr_compass_lib[] = {
    {"log", lr_l_log},
    {"now_ms", lr_l_now_ms},
    {NULL, NULL},
};

/* ---------------------------------------------------------------------------------------- */
/* The call: build the arguments, run the policy, read its answer (all protected)            */
/* ---------------------------------------------------------------------------------------- */

/* [-0, +0, m] t[key k] = v, for the set_* helpers below; t is an absolute index. */
static void set_int(lua_State *L, int t, int k, lua_Integer v)
{
    lua_pushvalue(L, UPV_KEY(k));
    lua_pushinteger(L, v);
    lua_rawset(L, t);
}

static void set_num(lua_State *L, int t, int k, lua_Number v)
{
    lua_pushvalue(L, UPV_KEY(k));
    lua_pushnumber(L, v);
    lua_rawset(L, t);
}

static void set_bool(lua_State *L, int t, int k, int v)
{
    lua_pushvalue(L, UPV_KEY(k));
    lua_pushboolean(L, v);
    lua_rawset(L, t);
}

/* Whether the Lua string cached at (p, pl) holds v's bytes. Compared here, eight bytes at a
 * time, rather than by memcmp: ids and keys are short, and every call compares a few per
 * candidate. */
static int same_str(const char *p, size_t pl, compass_str v)
{
    if (!p || pl != v.len)
        return 0;
    const char *q = v.ptr;
    for (; pl >= 8; pl -= 8, p += 8, q += 8) {
        uint64_t a, b;
        memcpy(&a, p, 8);
        memcpy(&b, q, 8);
        if (a != b)
            return 0;
    }
    for (; pl; pl--)
        if (*p++ != *q++)
            return 0;
    return 1;
}

/*
 * [-0, +1, m] Pushes v as a Lua string. The last string pushed through upvalue upv is kept
 * there, its bytes at (*p, *pl), and pushed again when v holds the same bytes: the route
 * is the same on every call of an instance and a key often repeats, and interning a string
 * (hash it, look it up, compare) costs more than comparing it with the last one.
 */
static void push_cached_str(lua_State *L, int upv, compass_str v, const char **p, size_t *pl)
{
    if (same_str(*p, *pl, v)) {
        lua_pushvalue(L, upv);
        return;
    }
    *p = lua_pushlstring(L, v.len ? v.ptr : "", v.len);
    *pl = v.len;
    lua_pushvalue(L, -1);
    lua_replace(L, upv); /* the upvalue keeps the string, so *p stays valid */
}

/* request.hour and request.weekday (1 Monday .. 7 Sunday) in local time, cached per hour. */
static void local_hour(lr_state *s, int64_t now_ms, int *hour, int *weekday)
{
    int64_t sec = now_ms >= 0 ? now_ms / 1000 : -((-now_ms + 999) / 1000);
    if (sec < s->hour_from || sec >= s->hour_to) {
        time_t t = (time_t)sec;
        struct tm tm;
        if (!localtime_r(&t, &tm)) {
            *hour = 0;
            *weekday = 1;
            return;
        }
        s->hour = tm.tm_hour;
        s->weekday = tm.tm_wday == 0 ? 7 : tm.tm_wday;
        s->hour_from = sec - tm.tm_min * 60 - tm.tm_sec;
        /* Up to the next full hour; leap seconds and odd zones only shorten the cache. */
        s->hour_to = s->hour_from + 3600;
    }
    *hour = s->hour;
    *weekday = s->weekday;
}

/*
 * [-0, +1, m] The request: a new plain table on every call (a policy may write to it, and
 * nothing it writes may reach the next call), sized for its 12 fields so that filling it
 * never rehashes.
 */
static void push_request(lua_State *L, lr_call *c)
{
    const compass_route_request *rr = c->rr;
    lr_state *s = c->s;
    lua_createtable(L, 0, 12);
    int t = lua_gettop(L);
    lua_pushvalue(L, UPV_KEY(K_ROUTE));
    push_cached_str(L, UPV_ROUTE, rr->route, &s->route_p, &s->route_len);
    lua_rawset(L, t);
    set_int(L, t, K_N_MESSAGES, (lua_Integer)rr->n_messages);
    set_int(L, t, K_N_CHARS, (lua_Integer)rr->n_chars);
    set_int(L, t, K_EST_TOKENS, (lua_Integer)rr->est_prompt_tokens);
    set_bool(L, t, K_HAS_TOOLS, rr->has_tools);
    set_bool(L, t, K_HAS_IMAGES, rr->has_images);
    set_bool(L, t, K_STREAM, rr->stream);
    lua_pushvalue(L, UPV_KEY(K_KEY_ID));
    push_cached_str(L, UPV_KEY_ID, rr->key_id, &s->key_p, &s->key_len);
    lua_rawset(L, t);
    lua_pushvalue(L, UPV_KEY(K_METADATA));
    size_t nm = rr->metadata ? rr->n_metadata : 0;
    lua_createtable(L, 0, nm < INT_MAX ? (int)nm : 0);
    for (size_t i = 0; i < nm; i++) {
        compass_str k = rr->metadata[i].name, v = rr->metadata[i].value;
        lua_pushlstring(L, k.len ? k.ptr : "", k.len);
        lua_pushlstring(L, v.len ? v.ptr : "", v.len);
        lua_rawset(L, -3);
    }
    lua_rawset(L, t);
    int64_t now = rr->now_ms ? rr->now_ms : s->r->h->now_ms(s->r->h);
    int hour, weekday;
    local_hour(s, now, &hour, &weekday);
    set_int(L, t, K_NOW_MS, (lua_Integer)now);
    set_int(L, t, K_HOUR, hour);
    set_int(L, t, K_WEEKDAY, weekday);
}

/* [-0, +0, m] Sets field k of table t to v, keeping a pointer to the Lua string in *p / *pl
 * (the backing table holds the string, so the pointer stays valid while it is cached). */
static void put_str(lua_State *L, int t, int k, compass_str v, const char **p, size_t *pl)
{
    lua_pushvalue(L, UPV_KEY(k));
    *p = lua_pushlstring(L, v.len ? v.ptr : "", v.len);
    *pl = v.len;
    lua_rawset(L, t);
}

/* [-0, +3, m] __pairs of a candidate view: iterates a merged copy of the backing table and
 * the policy's own fields. */
static int lr_view_pairs(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_createtable(L, 0, 24);
    int copy = lua_gettop(L);
    lua_getmetatable(L, 1);
    lua_rawgeti(L, -1, 1); /* the backing table, also kept at [1] of the metatable */
    for (int src = lua_gettop(L), pass = 0; pass < 2; pass++, src = 1) {
        lua_pushnil(L);
        while (lua_next(L, src)) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, copy);
        }
    }
    lua_settop(L, copy);
    lua_getglobal(L, "next"); /* the state's own base library, out of the policy's reach */
    lua_insert(L, copy);
    lua_pushnil(L);
    return 3;
}

/* Whether cd differs from what the slot says its backing table holds. */
static int slot_stale(const lr_slot *sl, const compass_candidate *cd)
{
    return !sl->valid || !same_str(sl->id, sl->id_len, cd->id) ||
           !same_str(sl->provider, sl->provider_len, cd->provider) ||
           !same_str(sl->model, sl->model_len, cd->model) || sl->tier != cd->tier ||
           !(sl->weight == cd->weight) || !(sl->price_in == cd->price_in) ||
           !(sl->price_out == cd->price_out) || !(sl->latency == cd->latency_ewma_ms) ||
           !(sl->ttft == cd->ttft_ewma_ms) || !(sl->error_rate == cd->error_rate) ||
           sl->in_flight != cd->in_flight || sl->capacity != cd->capacity ||
           sl->context_window != cd->context_window || sl->breaker != cd->breaker ||
           sl->caps != cd->caps;
}

/*
 * [-0, +0, m] Updates the backing table b (at index b) of position i from cd, writing only
 * what changed since this state's last call. 18 fields set through the API cost more than
 * the rest of a typical call, and between two calls most of them are the same.
 */
static void update_backing(lua_State *L, int b, lr_slot *sl, const compass_candidate *cd,
                           size_t i)
{
    int all = !sl->valid;
    sl->valid = 0; /* until every field is written: a raise midway forces a full rewrite */
    if (all)
        set_int(L, b, K_INDEX, (lua_Integer)(i + 1));
    if (all || !same_str(sl->id, sl->id_len, cd->id))
        put_str(L, b, K_ID, cd->id, &sl->id, &sl->id_len);
    if (all || !same_str(sl->provider, sl->provider_len, cd->provider))
        put_str(L, b, K_PROVIDER, cd->provider, &sl->provider, &sl->provider_len);
    if (all || !same_str(sl->model, sl->model_len, cd->model))
        put_str(L, b, K_MODEL, cd->model, &sl->model, &sl->model_len);
#define LR_UPD_INT(field, key, src)                                                            \
    if (all || sl->field != (src)) {                                                          \
        sl->field = (src);                                                                    \
        set_int(L, b, key, (lua_Integer)sl->field);                                           \
    }
#define LR_UPD_NUM(field, key, src)                                                            \
    if (all || !(sl->field == (src))) {                                                       \
        sl->field = (src);                                                                    \
        set_num(L, b, key, sl->field);                                                        \
    }
    LR_UPD_INT(tier, K_TIER, cd->tier)
    LR_UPD_NUM(weight, K_WEIGHT, cd->weight)
    LR_UPD_NUM(price_in, K_PRICE_IN, cd->price_in)
    LR_UPD_NUM(price_out, K_PRICE_OUT, cd->price_out)
    LR_UPD_NUM(latency, K_LATENCY_MS, cd->latency_ewma_ms)
    LR_UPD_NUM(ttft, K_TTFT_MS, cd->ttft_ewma_ms)
    LR_UPD_NUM(error_rate, K_ERROR_RATE, cd->error_rate)
    LR_UPD_INT(in_flight, K_IN_FLIGHT, cd->in_flight)
    LR_UPD_INT(capacity, K_CAPACITY, cd->capacity)
    LR_UPD_INT(context_window, K_CONTEXT_WINDOW, cd->context_window)
#undef LR_UPD_INT
#undef LR_UPD_NUM
    if (all || sl->breaker != cd->breaker) {
        sl->breaker = cd->breaker;
        lua_pushvalue(L, UPV_KEY(K_BREAKER));
        lua_pushvalue(L, UPV_KEY(cd->breaker == COMPASS_BREAKER_CLOSED      ? K_CLOSED
                                 : cd->breaker == COMPASS_BREAKER_HALF_OPEN ? K_HALF_OPEN
                                                                            : K_OPEN));
        lua_rawset(L, b);
    }
    if (all || sl->caps != cd->caps) {
        sl->caps = cd->caps;
        set_bool(L, b, K_TOOLS, (cd->caps & COMPASS_CAP_TOOLS) != 0);
        set_bool(L, b, K_VISION, (cd->caps & COMPASS_CAP_VISION) != 0);
        set_bool(L, b, K_JSON, (cd->caps & COMPASS_CAP_JSON) != 0);
    }
    sl->valid = 1;
}

/*
 * [-0, +(arr ? 0 : n), m] The candidate views, one per candidate: fresh, empty tables, each
 * reading through a protected metatable (__index) to the backing table of its position.
 * The policy reads c.price_in as usual and may add its own fields, which live in the view
 * and die with the call; the backing tables persist in the state, out of the policy's
 * reach, and are only patched where a stat changed. With arr (an absolute index), view i
 * goes to arr[i]; else the views are left on the stack in order.
 *
 * A view is made with room for LR_VIEW_ROOM fields of the policy's own when the policy
 * was seen writing some (c.cost = ...: room made up front is cheaper than the rehash of a
 * first write), and bare otherwise (making the room is a third of a view's cost).
 */
static void push_views(lua_State *L, lr_call *c, int arr)
{
    lr_state *s = c->s;
    int room = s->view_room;
    for (size_t i = 0; i < c->n; i++) {
        lr_slot *sl = &s->slots[i];
        const compass_candidate *cd = c->cands[i];
        lua_Integer mi = (lua_Integer)(2 * i + 1);
        if (!sl->valid) {
            if (lua_rawgeti(L, UPV_SLOTS, mi) != LUA_TTABLE) {
                lua_createtable(L, 0, 18);        /* backing */
                lua_createtable(L, 1, 3);         /* metatable */
                lua_pushvalue(L, -2);
                lua_setfield(L, -2, "__index");
                lua_pushvalue(L, -2);
                lua_rawseti(L, -2, 1);
                lua_pushboolean(L, 0);
                lua_setfield(L, -2, "__metatable");
                lua_pushcfunction(L, lr_view_pairs);
                lua_setfield(L, -2, "__pairs");
                /* The backing first: a metatable in the slot table means both are there,
                 * even if storing the second raises. */
                lua_pushvalue(L, -2);
                lua_rawseti(L, UPV_SLOTS, mi + 1);
                lua_rawseti(L, UPV_SLOTS, mi);
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        }
        if (slot_stale(sl, cd)) {
            lua_rawgeti(L, UPV_SLOTS, mi + 1);
            update_backing(L, lua_gettop(L), sl, cd, i);
            lua_pop(L, 1);
        }
        lua_createtable(L, 0, room);
        lua_rawgeti(L, UPV_SLOTS, mi);
        lua_setmetatable(L, -2);
        c->ptrs[i] = lua_topointer(L, -1);
        if (arr)
            lua_rawseti(L, arr, (lua_Integer)(i + 1));
    }
}

/*
 * [-0, +0, -] Whether the policy stored fields of its own in any of the views at
 * [v, v + n): lua_next on a view is cheap, and only bare views are looked at (push_views).
 */
static int views_written(lua_State *L, int v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        lua_pushnil(L);
        if (lua_next(L, v + (int)i)) {
            lua_pop(L, 2);
            return 1;
        }
    }
    return 0;
}

/* Records a nonsense answer (what: the complaint); returns 0 so the call ends cleanly. */
static int bad_answer(lr_call *c, const char *what)
{
    snprintf(c->msg, sizeof(c->msg), "%s:%d: %s() %s", c->s->r->base, c->s->r->fn_line,
             c->s->r->func, what);
    c->bad = 1;
    return 0;
}

/* Which candidate entry e of the answer (at the top of the stack) names: its position, or
 * c->n with what filled. hint: the position to try first for a table. */
static size_t answer_entry(lua_State *L, lr_call *c, int ty, long long e, size_t hint,
                           char *what, size_t wl)
{
    if (ty == LUA_TTABLE) {
        const void *p = lua_topointer(L, -1);
        if (hint < c->n && c->ptrs[hint] == p)
            return hint;
        for (size_t i = 0; i < c->n; i++)
            if (c->ptrs[i] == p)
                return i;
        snprintf(what, wl, "returned a table at entry %lld that is not one of the candidates",
                 e);
    } else if (ty == LUA_TNUMBER) {
        int isint = 0;
        lua_Integer v = lua_tointegerx(L, -1, &isint);
        if (isint && v >= 1 && (lua_Unsigned)v <= c->n)
            return (size_t)(v - 1);
        snprintf(what, wl, "returned %s at entry %lld, not a candidate index (1..%zu)",
                 lua_tostring(L, -1), e, c->n);
    } else if (ty == LUA_TSTRING) {
        size_t sl;
        const char *sv = lua_tolstring(L, -1, &sl);
        for (size_t i = 0; i < c->n; i++) {
            compass_str id = c->cands[i]->id;
            if (id.len == sl && (sl == 0 || memcmp(id.ptr, sv, sl) == 0))
                return i;
        }
        snprintf(what, wl, "returned unknown candidate id '%.80s' at entry %lld", sv, e);
    } else {
        snprintf(what, wl, "returned %s at entry %lld; expected a candidate, its index or its id",
                 lua_typename(L, ty), e);
    }
    return c->n;
}

/* [-0, +0, m] Maps the answer at the top of the stack to candidate positions in c->order. */
static int read_answer(lua_State *L, lr_call *c)
{
    char what[300];
    int ans = lua_gettop(L);
    if (!lua_istable(L, ans)) {
        snprintf(what, sizeof(what), "returned %s; expected an array of candidates",
                 luaL_typename(L, ans));
        return bad_answer(c, what);
    }
    lua_Unsigned len = lua_rawlen(L, ans);
    if (len == 0)
        return bad_answer(c, "returned an empty list");
    memset(c->seen, 0, c->n);
    size_t hint = 0; /* answers are mostly runs of candidates in their given order */
    for (lua_Unsigned e = 1; e <= len; e++) {
        int ty = lua_rawgeti(L, ans, (lua_Integer)e);
        size_t idx = answer_entry(L, c, ty, (long long)e, hint, what, sizeof(what));
        lua_pop(L, 1);
        if (idx == c->n)
            return bad_answer(c, what);
        if (c->seen[idx]) {
            compass_str id = c->cands[idx]->id;
            snprintf(what, sizeof(what), "returned candidate %zu ('%.*s') twice", idx + 1,
                     (int)(id.len < 80 ? id.len : 80), id.len ? id.ptr : "");
            return bad_answer(c, what);
        }
        c->seen[idx] = 1;
        hint = idx + 1;
        if (c->count < c->cap)
            c->order[c->count++] = idx;
    }
    return 0;
}

/*
 * [-1, +0, v] The protected body of one rank() call. Upvalues: the policy, the slot table,
 * the last route and key_id strings, the keys.
 */
static int lr_do_call(lua_State *L)
{
    lr_call *c = lua_touserdata(L, 1);
    lr_state *s = c->s;
    if (c->n > (size_t)INT_MAX - 64)
        return luaL_error(L, "too many candidates");
    if (c->n > LR_STACK_CANDS) {
        c->ptrs = lua_newuserdatauv(L, c->n * sizeof(*c->ptrs), 0);
        c->seen = lua_newuserdatauv(L, c->n, 0);
    }
    /* Bare views stay on the stack below the call, to be looked at afterwards. */
    int bare = s->view_room == 0, v = lua_gettop(L) + 1;
    luaL_checkstack(L, (bare ? (int)c->n : 0) + 32, "candidates");
    if (bare)
        push_views(L, c, 0);
    lua_pushvalue(L, UPV_FN);
    push_request(L, c);
    lua_createtable(L, (int)c->n, 0);
    if (bare) {
        for (size_t i = 0; i < c->n; i++) {
            lua_pushvalue(L, v + (int)i);
            lua_rawseti(L, -2, (lua_Integer)(i + 1));
        }
    } else {
        push_views(L, c, lua_gettop(L));
    }
    lua_call(L, 2, 1);
    if (bare) {
        if (views_written(L, v, c->n)) {
            s->view_room = LR_VIEW_ROOM;
            s->room_calls = LR_ROOM_CALLS;
        }
    } else if (--s->room_calls == 0) {
        s->view_room = 0; /* look again now and then: the policy may have stopped */
    }
    return read_answer(L, c);
}

/* ---------------------------------------------------------------------------------------- */
/* States                                                                                    */
/* ---------------------------------------------------------------------------------------- */

static const char *const lr_base_allowed[] = {
    "assert", "error", "ipairs", "next", "pairs", "pcall", "select", "tonumber", "tostring",
    "type", "xpcall", "rawequal", "rawget", "rawlen", "rawset", "setmetatable",
    "getmetatable", "_VERSION", NULL,
};

static const lua_CFunction lr_libs_open[] = {luaopen_base, luaopen_string, luaopen_table,
                                             luaopen_math, luaopen_utf8};
static const char *const lr_libs_name[] = {"_G", LUA_STRLIBNAME, LUA_TABLIBNAME,
                                           LUA_MATHLIBNAME, LUA_UTF8LIBNAME};

/*
 * Starts a call's budgets. Setting the hook again restarts its count, so the hook first runs
 * after LR_HOOK_EVERY instructions of this call: short policies never reach it. The clock
 * starts there too (see lr_hook), which keeps the common path free of clock reads.
 */
static void budget_start(lr_state *s)
{
    lr_router *r = s->r;
    s->left = r->instructions;
    s->start_ns = 0;
    s->oom = 0;
    s->pos_line = 0;
    s->pos_src[0] = '\0';
    s->trace[0] = '\0';
    s->limit = LIM_NONE;
    s->hook_count = r->instructions < LR_HOOK_EVERY ? (int)r->instructions : LR_HOOK_EVERY;
    lua_sethook(s->L, lr_hook, LUA_MASKCOUNT, s->hook_count);
}

/* [-1, +0, e] Builds the sandbox and runs the policy's main chunk. Arg 1: the router. */
static int lr_setup(lua_State *L)
{
    lr_router *r = lua_touserdata(L, 1);
    for (size_t i = 0; i < sizeof(lr_libs_open) / sizeof(lr_libs_open[0]); i++) {
        luaL_requiref(L, lr_libs_name[i], lr_libs_open[i], 1);
        lua_pop(L, 1);
    }
    /* The policy's environment, from an allow-list. */
    lua_createtable(L, 0, 32);
    int env = lua_gettop(L);
    lua_pushglobaltable(L);
    int g = lua_gettop(L);
    for (const char *const *n = lr_base_allowed; *n; n++) {
        lua_getfield(L, g, *n);
        lua_setfield(L, env, *n);
    }
    for (size_t i = 1; i < sizeof(lr_libs_name) / sizeof(lr_libs_name[0]); i++) {
        lua_getfield(L, g, lr_libs_name[i]);
        lua_setfield(L, env, lr_libs_name[i]);
    }
    lua_pushcfunction(L, lr_l_print);
    lua_setfield(L, env, "print");
    luaL_newlib(L, lr_compass_lib);
    lua_setfield(L, env, "compass");

    if (r->src_len >= 1 && r->src[0] == LUA_SIGNATURE[0])
        return luaL_error(L, "%s: precompiled (binary) chunks are refused; give Lua source",
                          r->base);
    int rc = luaL_loadbufferx(L, r->src, r->src_len, r->chunkname, "t");
    if (rc != LUA_OK)
        return lua_error(L);
    lua_pushvalue(L, env);
    if (!lua_setupvalue(L, -2, 1))
        lua_pop(L, 1);
    lua_call(L, 0, 0);

    /* The call closure: the policy function and the interned keys as upvalues. */
    if (lua_getfield(L, env, r->func) != LUA_TFUNCTION)
        return luaL_error(L, "%s: the policy defines no function '%s' (found %s)", r->base,
                          r->func, luaL_typename(L, -1));
    lua_Debug ar;
    lua_pushvalue(L, -1);
    if (lua_getinfo(L, ">S", &ar))
        state_of(L)->fn_line = ar.linedefined > 0 ? ar.linedefined : 1;
    luaL_checkstack(L, K_COUNT + UPV_N_FIXED + 1, "keys");
    lua_newtable(L);          /* the slot table */
    lua_pushliteral(L, "");   /* route */
    lua_pushliteral(L, "");   /* key_id */
    for (int k = 0; k < K_COUNT; k++)
        lua_pushstring(L, lr_key_text[k]);
    lua_pushcclosure(L, lr_do_call, K_COUNT + UPV_N_FIXED);
    state_of(L)->call_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

static void state_free(lr_state *s)
{
    if (!s)
        return;
    const compass_host *h = s->r->h;
    if (s->L)
        lua_close(s->L);
    cache_drain(s);
    h->free(h, s->slots);
    h->free(h, s);
}

/* Makes one sandboxed state running the policy; NULL with err filled on failure. */
static lr_state *state_new(lr_router *r, compass_err *err)
{
    const compass_host *h = r->h;
    lr_state *s = h->alloc(h, sizeof(*s));
    if (!s) {
        compass_err_set(err, COMPASS_ENOMEM, "lua: out of memory");
        return NULL;
    }
    memset(s, 0, sizeof(*s));
    s->r = r;
    s->cap = r->mem_cap;
    s->hour_to = INT64_MIN;
    s->L = lua_newstate(lr_alloc, s);
    if (!s->L) {
        if (err) {
            snprintf(err->msg, sizeof(err->msg), "%s: cannot create a Lua state in %zu KB",
                     r->base, r->mem_cap / 1024);
            err->code = COMPASS_ENOMEM;
        }
        state_free(s);
        return NULL;
    }
    memcpy(lua_getextraspace(s->L), &s, sizeof(s));
    lua_gc(s->L, LUA_GCGEN, 0, 0);
    budget_start(s);

    lua_State *L = s->L;
    lua_pushcfunction(L, lr_msgh);
    lua_pushcfunction(L, lr_setup);
    lua_pushlightuserdata(L, r);
    int rc = lua_pcall(L, 1, 0, 1);
    if (rc != LUA_OK) {
        int code = COMPASS_EPLUGIN;
        if (s->limit != LIM_NONE) {
            compass_err_set(err, code, s->limit_msg);
        } else if (rc == LUA_ERRMEM || s->oom) {
            /* Loading reports a failed allocation as a plain error: any refusal counts. */
            code = COMPASS_ENOMEM;
            if (err) {
                snprintf(err->msg, sizeof(err->msg), "%s: memory limit exceeded (%zu KB) "
                         "while loading the policy", r->base, r->mem_cap / 1024);
                err->code = code;
            }
        } else {
            compass_err_set(err, code, lua_tostring(L, -1) ? lua_tostring(L, -1)
                                                           : "policy failed to load");
        }
        state_free(s);
        return NULL;
    }
    lua_settop(L, 0);
    return s;
}

/*
 * Takes a state from the pool: the one this thread used last when it is free, else one no
 * thread has used, else a new one while the pool is not full, else any free one. A state
 * keeps to one thread so that its heap stays in that core's cache: a state that moves to
 * another core costs that core a few KB of cache misses on every call, about 15% of a
 * decision with two threads (bench_lua --threads 2).
 */
static lr_state *pool_take(lr_router *r, compass_err *err)
{
    pthread_t self = pthread_self();
    pthread_mutex_lock(&r->mu);
    for (;;) {
        lr_state **pick = NULL, **pp;
        for (pp = &r->free_list; *pp; pp = &(*pp)->next) {
            lr_state *s = *pp;
            if (!s->has_owner || pthread_equal(s->owner, self)) {
                pick = pp;
                if (s->has_owner)
                    break; /* our own: the best there is */
            }
        }
        if (!pick && r->n_states < LR_MAX_STATES) {
            r->n_states++;
            pthread_mutex_unlock(&r->mu);
            lr_state *s = state_new(r, err);
            if (!s) {
                pthread_mutex_lock(&r->mu);
                r->n_states--;
                pthread_cond_signal(&r->cv);
                pthread_mutex_unlock(&r->mu);
                return NULL;
            }
            s->owner = self;
            s->has_owner = 1;
            return s;
        }
        if (!pick && r->free_list)
            pick = &r->free_list;
        if (pick) {
            lr_state *s = *pick;
            *pick = s->next;
            s->owner = self;
            s->has_owner = 1;
            pthread_mutex_unlock(&r->mu);
            return s;
        }
        /* Every state is running a call, each bounded by the budgets: wait for one. */
        pthread_cond_wait(&r->cv, &r->mu);
    }
}

static void pool_give(lr_router *r, lr_state *s)
{
    pthread_mutex_lock(&r->mu);
    s->next = r->free_list;
    r->free_list = s;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void pool_drop(lr_router *r, lr_state *s)
{
    state_free(s);
    pthread_mutex_lock(&r->mu);
    r->n_states--;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* ---------------------------------------------------------------------------------------- */
/* Instances                                                                                 */
/* ---------------------------------------------------------------------------------------- */

static void lr_instance_free(void *inst)
{
    lr_router *r = inst;
    if (!r)
        return;
    const compass_host *h = r->h;
    while (r->free_list) {
        lr_state *s = r->free_list;
        r->free_list = s->next;
        state_free(s);
    }
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    h->free(h, r->path);
    h->free(h, r->chunkname);
    h->free(h, r->func);
    h->free(h, r->labels);
    h->free(h, r->src);
    h->free(h, r);
}

/* Reads the policy file into r->src. */
static int read_policy(lr_router *r, compass_err *err)
{
    const compass_host *h = r->h;
    FILE *f = fopen(r->path, "rb");
    if (!f) {
        if (err) {
            snprintf(err->msg, sizeof(err->msg), "%s: cannot open policy: %s", r->path,
                     strerror(errno));
            err->code = COMPASS_ENOTFOUND;
        }
        return err ? err->code : COMPASS_ENOTFOUND;
    }
    size_t cap = 4096, len = 0;
    char *buf = h->alloc(h, cap);
    int rc = COMPASS_OK;
    while (buf) {
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (len < cap) {
            if (ferror(f))
                rc = COMPASS_EIO;
            break;
        }
        if (cap >= LR_MAX_POLICY) {
            rc = COMPASS_ELIMIT;
            break;
        }
        char *nb = h->realloc(h, buf, cap * 2);
        if (!nb) {
            h->free(h, buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    fclose(f);
    if (!buf)
        return compass_err_set(err, COMPASS_ENOMEM, "lua: out of memory reading the policy");
    if (rc != COMPASS_OK) {
        h->free(h, buf);
        if (err) {
            snprintf(err->msg, sizeof(err->msg), "%s: %s", r->path,
                     rc == COMPASS_EIO ? "read error" : "policy file larger than 1 MB");
            err->code = rc;
        }
        return rc;
    }
    /* A "#!" first line is skipped, as luaL_loadfile does; blanking it keeps line numbers. */
    if (len && buf[0] == '#')
        for (size_t i = 0; i < len && buf[i] != '\n'; i++)
            buf[i] = ' ';
    r->src = buf;
    r->src_len = len;
    return COMPASS_OK;
}

static int lr_instance_new(const compass_host *h, const compass_instance_info *info,
                           void **inst, compass_err *err)
{
    if (!h || !info || !inst)
        return compass_err_set(err, COMPASS_EINVAL, "lua: instance_new: NULL argument");
    *inst = NULL;
    const lr_options *o = info->options;
    if (!o || !o->policy || !*o->policy)
        return compass_err_set(err, COMPASS_ECONFIG, "lua: option 'policy' is required");
    const char *fn = o->function && *o->function ? o->function : "route";
    if (o->instructions < 1 || o->memory_kb < LR_MIN_MEMORY_KB ||
        o->memory_kb > (int64_t)(SIZE_MAX / 2048) || o->timeout_ms < 0 ||
        o->timeout_ms > 3600000) {
        if (err) {
            snprintf(err->msg, sizeof(err->msg),
                     "lua: instructions must be >= 1, memory_kb >= %d, timeout_ms 0..3600000 "
                     "(got %lld, %lld, %lld)", LR_MIN_MEMORY_KB, (long long)o->instructions,
                     (long long)o->memory_kb, (long long)o->timeout_ms);
            err->code = COMPASS_ECONFIG;
        }
        return COMPASS_ECONFIG;
    }

    lr_router *r = h->alloc(h, sizeof(*r));
    if (!r)
        return compass_err_set(err, COMPASS_ENOMEM, "lua: out of memory");
    memset(r, 0, sizeof(*r));
    r->h = h;
    if (pthread_mutex_init(&r->mu, NULL) != 0) {
        h->free(h, r);
        return compass_err_set(err, COMPASS_ENOMEM, "lua: cannot make a mutex");
    }
    if (pthread_cond_init(&r->cv, NULL) != 0) {
        pthread_mutex_destroy(&r->mu);
        h->free(h, r);
        return compass_err_set(err, COMPASS_ENOMEM, "lua: cannot make a condition variable");
    }
    r->instructions = o->instructions;
    r->timeout_ns = (uint64_t)o->timeout_ms * 1000000u;
    r->mem_cap = (size_t)o->memory_kb * 1024;

    size_t pl = strlen(o->policy);
    r->path = lr_strdup(h, o->policy, pl);
    r->func = lr_strdup(h, fn, strlen(fn));
    if (!r->path || !r->func)
        goto nomem;
    const char *slash = strrchr(r->path, '/');
    r->base = slash ? slash + 1 : r->path;
    size_t bl = strlen(r->base);
    r->chunkname = h->alloc(h, bl + 2);
    r->labels = h->alloc(h, 2 * bl + 16);
    if (!r->chunkname || !r->labels)
        goto nomem;
    r->chunkname[0] = '@';
    memcpy(r->chunkname + 1, r->base, bl + 1);
    {   /* policy="<basename>", escaped for the Prometheus text format */
        char *p = r->labels;
        memcpy(p, "policy=\"", 8);
        p += 8;
        for (const char *q = r->base; *q; q++) {
            if (*q == '\\' || *q == '"' || *q == '\n') {
                *p++ = '\\';
                *p++ = *q == '\n' ? 'n' : *q;
            } else {
                *p++ = *q;
            }
        }
        *p++ = '"';
        *p = '\0';
    }

    int rc = read_policy(r, err);
    if (rc != COMPASS_OK) {
        lr_instance_free(r);
        return rc;
    }
    /* The first state proves the policy loads; it then serves calls. */
    lr_state *s = state_new(r, err);
    if (!s) {
        rc = err && err->code ? err->code : COMPASS_EPLUGIN;
        if (err)
            h->log(h, COMPASS_LOG_ERROR, "%s", err->msg);
        lr_instance_free(r);
        return rc;
    }
    r->fn_line = s->fn_line; /* every state runs the same text */
    r->n_states = 1;
    r->free_list = s;
    *inst = r;
    return COMPASS_OK;
nomem:
    lr_instance_free(r);
    return compass_err_set(err, COMPASS_ENOMEM, "lua: out of memory");
}

/* Counts, logs and reports one failed call. */
static int fail_call(lr_router *r, const char *msg, const char *trace, compass_err *err)
{
    const compass_host *h = r->h;
    h->metric_add(h, "compass_lua_errors_total", r->labels, 1);
    h->log(h, COMPASS_LOG_WARN, "lua policy failed, route falls back to its default: %s", msg);
    if (trace && *trace)
        h->log(h, COMPASS_LOG_DEBUG, "%s", trace);
    return compass_err_set(err, COMPASS_EPLUGIN, msg);
}

static int lr_rank(void *inst, compass_req *req, const compass_route_request *rr,
                   const compass_candidate *const *cands, size_t n, size_t *order,
                   size_t *n_order, compass_err *err)
{
    (void)req;
    lr_router *r = inst;
    if (!r || !rr || (!cands && n) || !order || !n_order)
        return compass_err_set(err, COMPASS_EINVAL, "lua: rank: NULL argument");
    for (size_t i = 0; i < n; i++)
        if (!cands[i])
            return compass_err_set(err, COMPASS_EINVAL, "lua: rank: NULL candidate");
    size_t cap = *n_order;
    *n_order = 0;
    if (n == 0)
        return COMPASS_OK;

    compass_err lerr;
    lerr.code = 0;
    lerr.msg[0] = '\0';
    lr_state *s = pool_take(r, &lerr);
    if (!s)
        return fail_call(r, lerr.msg, NULL, err);

    if (n > s->n_slots) {
        lr_slot *ns = NULL;
        if (n <= SIZE_MAX / sizeof(*ns))
            ns = s->slots ? r->h->realloc(r->h, s->slots, n * sizeof(*ns))
                          : r->h->alloc(r->h, n * sizeof(*ns));
        if (!ns) {
            pool_give(r, s);
            return fail_call(r, "lua: out of memory for the candidate cache", NULL, err);
        }
        memset(ns + s->n_slots, 0, (n - s->n_slots) * sizeof(*ns));
        s->slots = ns;
        s->n_slots = n;
    }

    lr_call c;
    c.s = s;
    c.rr = rr;
    c.cands = cands;
    c.n = n;
    c.order = order;
    c.cap = cap;
    c.count = 0;
    c.ptrs = c.stack_ptrs;
    c.seen = c.stack_seen;
    c.bad = 0;
    c.msg[0] = '\0';

    lua_State *L = s->L;
    budget_start(s);
    lua_settop(L, 0);
    lua_pushcfunction(L, lr_msgh);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->call_ref);
    lua_pushlightuserdata(L, &c);
    int rc = lua_pcall(L, 1, 0, 1);
    if (rc == LUA_OK && !c.bad) {
        lua_settop(L, 0);
        pool_give(r, s);
        *n_order = c.count;
        return COMPASS_OK;
    }

    char msg[sizeof(err->msg)];
    int broken = 0;
    if (rc == LUA_OK) {
        snprintf(msg, sizeof(msg), "%s", c.msg);
    } else if (s->limit != LIM_NONE) {
        snprintf(msg, sizeof(msg), "%s", s->limit_msg);
    } else if (rc == LUA_ERRMEM || (rc == LUA_ERRERR && s->oom)) {
        /* Lua has no frame left to ask; the hook's last sighting is the best position. */
        if (s->pos_line > 0)
            snprintf(msg, sizeof(msg), "%s:%d: memory limit exceeded (%zu KB)", s->pos_src,
                     s->pos_line, r->mem_cap / 1024);
        else
            snprintf(msg, sizeof(msg), "%s:%d: memory limit exceeded (%zu KB)", r->base,
                     r->fn_line, r->mem_cap / 1024);
        broken = 1; /* start the next call from a fresh state */
    } else {
        const char *m = lua_tostring(L, -1);
        snprintf(msg, sizeof(msg), "%s", m ? m : "policy failed");
    }
    int ret = fail_call(r, msg, rc == LUA_OK ? NULL : s->trace, err);
    lua_settop(L, 0);
    if (broken)
        pool_drop(r, s);
    else
        pool_give(r, s);
    return ret;
}

/* ---------------------------------------------------------------------------------------- */
/* Descriptor                                                                                */
/* ---------------------------------------------------------------------------------------- */

static const compass_router_ops lr_ops = {
    .size = sizeof(compass_router_ops),
    .instance_new = lr_instance_new,
    .instance_free = lr_instance_free,
    .rank = lr_rank,
};

static const compass_plugin_desc lr_desc = {
    COMPASS_PLUGIN_DESC_INIT,
    .kind = COMPASS_PLUGIN_ROUTER,
    .name = "lua",
    .version = "0.1.0",
    .summary = "ranks candidates with a sandboxed Lua 5.4 policy (scripts/routing/*.lua)",
    .options = lr_option_table,
    .options_size = sizeof(lr_options),
    .ops = {.router = &lr_ops},
};

COMPASS_PLUGIN_DEFINE(lua, lr_desc)
