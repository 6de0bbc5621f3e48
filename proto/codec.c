/* bitplan proto: message schemas, the decoder and the encoders.
 *
 * One table (msgdefs) drives both directions, so the encoder cannot write a
 * field the decoder does not know; every encode is also decoded back as a
 * self-check before it is handed out.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/wire_check.h"
#include "proto_internal.h"

/* ---- Schema tables ---------------------------------------------------- */

typedef enum { F_STR, F_U64, F_I32, F_F64, F_MAP, F_JOBS } fkind;
typedef enum { S_NONE, S_NAME, S_TEXT, S_SPEC, S_PLAN, S_IDENT } sclass;

#define OPT 1u /* may be absent or nil */
#define NO_HAS ((size_t)-1)
#define IDENT_MAX 32 /* bytes in state / kind identifiers */

typedef struct field {
    const char *key;
    fkind kind;
    unsigned flags;
    sclass sc;        /* F_STR */
    size_t off;       /* offsetof(bp_msg, value) */
    size_t has_off;   /* offsetof(bp_msg, bool has_x) or NO_HAS */
    uint64_t umin, umax; /* F_U64 range */
    double fmin, fmax;   /* F_F64 range */
} field;

#define OFF(m) offsetof(bp_msg, u.m)
#define STR(k, m, c) {k, F_STR, 0, c, OFF(m), NO_HAS, 0, 0, 0, 0}
#define STR_OPT(k, m, c) {k, F_STR, OPT, c, OFF(m), NO_HAS, 0, 0, 0, 0}
#define U64(k, m, lo, hi) {k, F_U64, 0, S_NONE, OFF(m), NO_HAS, lo, hi, 0, 0}
#define U64_OPT(k, m, h) {k, F_U64, OPT, S_NONE, OFF(m), OFF(h), 0, UINT64_MAX, 0, 0}
#define I32(k, m) {k, F_I32, 0, S_NONE, OFF(m), NO_HAS, 0, 0, 0, 0}
#define I32_OPT(k, m, h) {k, F_I32, OPT, S_NONE, OFF(m), OFF(h), 0, 0, 0, 0}
#define F64(k, m, lo, hi) {k, F_F64, 0, S_NONE, OFF(m), NO_HAS, 0, 0, lo, hi}
#define F64_OPT(k, m, h, lo, hi) {k, F_F64, OPT, S_NONE, OFF(m), OFF(h), 0, 0, lo, hi}
#define MAP(k, m) {k, F_MAP, 0, S_NONE, OFF(m), NO_HAS, 0, 0, 0, 0}

static const field f_submit[] = {STR("job", submit.job, S_SPEC)};
static const field f_status[] = {STR("job", status.job, S_NAME)};
static const field f_result[] = {STR("job", result.job, S_NAME)};
static const field f_cancel[] = {STR("job", cancel.job, S_NAME)};
static const field f_submitted[] = {STR("job", submitted.job, S_NAME)};
static const field f_status_reply[] = {
    STR("job", status_reply.job, S_NAME),
    STR("state", status_reply.state, S_IDENT),
    U64("done", status_reply.done, 0, UINT64_MAX),
    U64("total", status_reply.total, 0, UINT64_MAX),
    F64("progress", status_reply.progress, 0.0, 1.0),
    F64_OPT("eta_s", status_reply.eta_s, status_reply.has_eta, 0.0, HUGE_VAL),
    I32_OPT("error_code", status_reply.error_code, status_reply.has_error_code),
    STR_OPT("error", status_reply.error, S_TEXT),
};
static const field f_result_reply[] = {
    STR("job", result_reply.job, S_NAME),
    STR("plan", result_reply.plan, S_PLAN),
};
static const field f_jobs_reply[] = {
    {"jobs", F_JOBS, 0, S_NONE, OFF(jobs_reply.jobs), NO_HAS, 0, 0, 0, 0},
};
static const field f_error[] = {
    I32("code", error.code),
    STR("message", error.message, S_TEXT),
};
static const field f_ready[] = {
    STR("worker", ready.worker, S_NAME),
    U64("threads", ready.threads, 1, 65536),
    U64("pid", ready.pid, 1, INT32_MAX),
};
static const field f_heartbeat[] = {
    U64("progress", heartbeat.progress, 0, UINT64_MAX),
    U64_OPT("task", heartbeat.task, heartbeat.has_task),
};
static const field f_task_result[] = {
    U64("task", task_result.task, 0, UINT64_MAX),
    STR("hash", task_result.hash, S_NAME),
    MAP("result", task_result.result),
};
static const field f_task_failed[] = {
    U64("task", task_failed.task, 0, UINT64_MAX),
    I32("code", task_failed.code),
    STR("message", task_failed.message, S_TEXT),
};
static const field f_welcome[] = {
    U64("heartbeat_ms", welcome.heartbeat_ms, 1, 3600000),
    U64("liveness", welcome.liveness, 1, 1000),
};
#define DEADLINE_MAX_MS UINT64_C(2592000000) /* 30 days */
static const field f_task[] = {
    U64("task", task.task, 0, UINT64_MAX),
    STR("kind", task.kind, S_IDENT),
    MAP("params", task.params),
    U64("deadline_ms", task.deadline_ms, 0, DEADLINE_MAX_MS),
};

typedef struct msgdef {
    const char *name;
    unsigned senders;
    bool has_bin;
    const field *fields;
    size_t n_fields;
} msgdef;

#define C BP_PROTO_FROM_CLIENT
#define K BP_PROTO_FROM_COORDINATOR
#define W BP_PROTO_FROM_WORKER
#define DEF(name, senders, bin, f) {name, senders, bin, f, sizeof f / sizeof f[0]}
#define DEF0(name, senders) {name, senders, false, NULL, 0}
static const msgdef msgdefs[BP_MSG_TYPE_COUNT] = {
    [BP_MSG_NONE] = {"?", 0, false, NULL, 0},
    [BP_MSG_SUBMIT] = DEF("submit", C, false, f_submit),
    [BP_MSG_STATUS] = DEF("status", C, false, f_status),
    [BP_MSG_RESULT] = DEF("result", C, false, f_result),
    [BP_MSG_CANCEL] = DEF("cancel", C, false, f_cancel),
    [BP_MSG_JOBS] = DEF0("jobs", C),
    [BP_MSG_SUBMITTED] = DEF("submitted", K, false, f_submitted),
    [BP_MSG_STATUS_REPLY] = DEF("status_reply", K, false, f_status_reply),
    [BP_MSG_RESULT_REPLY] = DEF("result_reply", K, false, f_result_reply),
    [BP_MSG_JOBS_REPLY] = DEF("jobs_reply", K, false, f_jobs_reply),
    [BP_MSG_OK] = DEF0("ok", K),
    [BP_MSG_ERROR] = DEF("error", K, false, f_error),
    [BP_MSG_READY] = DEF("ready", W, false, f_ready),
    [BP_MSG_HEARTBEAT] = DEF("heartbeat", W, false, f_heartbeat),
    [BP_MSG_TASK_RESULT] = DEF("task_result", W, true, f_task_result),
    [BP_MSG_TASK_FAILED] = DEF("task_failed", W, false, f_task_failed),
    [BP_MSG_DISCONNECT] = DEF0("disconnect", K | W),
    [BP_MSG_WELCOME] = DEF("welcome", K, false, f_welcome),
    [BP_MSG_TASK] = DEF("task", K, true, f_task),
};
#undef C
#undef K
#undef W

/* Header keys every message has, before the type's own fields. */
enum { HK_V, HK_T, HK_ID, HK_BIN, HK_FIELDS };
#define MAX_KEYS (HK_FIELDS + 10)

const char *bp_msg_type_name(bp_msg_type t)
{
    if ((int)t <= BP_MSG_NONE || (int)t >= BP_MSG_TYPE_COUNT)
        return "?";
    return msgdefs[t].name;
}

unsigned bp_msg_type_senders(bp_msg_type t)
{
    if ((int)t <= BP_MSG_NONE || (int)t >= BP_MSG_TYPE_COUNT)
        return 0;
    return msgdefs[t].senders;
}

/* ---- Message lifetime ------------------------------------------------- */

void bp_msg_init(bp_msg *m)
{
    if (!m)
        return;
    memset(m, 0, sizeof *m);
    msgpack_unpacked_init(&m->priv_unpacked);
}

void bp_msg_clear(bp_msg *m)
{
    if (!m)
        return;
    msgpack_unpacked_destroy(&m->priv_unpacked);
    free(m->priv_alloc);
    bp_msg_init(m);
}

int bp_msg_new(bp_msg **out)
{
    if (!out)
        return BP_EINVAL;
    *out = malloc(sizeof **out);
    if (!*out)
        return BP_ENOMEM;
    bp_msg_init(*out);
    return BP_OK;
}

void bp_msg_destroy(bp_msg **p)
{
    if (!p || !*p)
        return;
    bp_msg_clear(*p);
    free(*p);
    *p = NULL;
}

/* ---- Decoding helpers ------------------------------------------------- */

static bool key_is(const msgpack_object *k, const char *name, size_t name_len)
{
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == name_len &&
           memcmp(k->via.str.ptr, name, name_len) == 0;
}

/* Single lookup in a map that may still hold duplicates or non-string keys:
 * BP_OK with *val (NULL if absent), or BP_EPROTO on a duplicate. */
static int find_key(const msgpack_object *map, const char *key, const msgpack_object **val,
                    const char *ctx, bp_error *err)
{
    size_t kl = strlen(key);
    *val = NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object_kv *kv = &map->via.map.ptr[i];
        if (!key_is(&kv->key, key, kl))
            continue;
        if (*val)
            return bp_error_set(err, BP_EPROTO, "%s: duplicate field '%s'", ctx, key);
        *val = &kv->val;
    }
    return BP_OK;
}

/* Match every key of a map against names[0..n): unknown or duplicate keys
 * are errors; vals[i] gets the value of names[i] or NULL. */
static int match_keys(const msgpack_object *map, const char *const *names, size_t n,
                      const msgpack_object **vals, const char *ctx, bp_error *err)
{
    for (size_t i = 0; i < n; i++)
        vals[i] = NULL;
    for (uint32_t k = 0; k < map->via.map.size; k++) {
        const msgpack_object_kv *kv = &map->via.map.ptr[k];
        size_t i;
        for (i = 0; i < n; i++)
            if (names[i] && key_is(&kv->key, names[i], strlen(names[i])))
                break;
        if (i == n) {
            char show[BP__SHOW_CAP];
            if (kv->key.type != MSGPACK_OBJECT_STR)
                return bp_error_set(err, BP_EPROTO, "%s: map key of type %s is not a string", ctx,
                                    bp__mp_type_name(kv->key.type));
            return bp_error_set(err, BP_EPROTO, "%s: unknown field '%s'", ctx,
                                bp__show(kv->key.via.str.ptr, kv->key.via.str.size, show,
                                         sizeof show));
        }
        if (vals[i])
            return bp_error_set(err, BP_EPROTO, "%s: duplicate field '%s'", ctx, names[i]);
        vals[i] = &kv->val;
    }
    return BP_OK;
}

/* Policy for every object in a header, opaque maps included: strings are
 * UTF-8 without NUL, map keys are strings, floats are finite. Depth is
 * bounded by wire_check, so recursion is bounded. */
static int walk(const msgpack_object *o, const char *ctx, bp_error *err)
{
    switch (o->type) {
    case MSGPACK_OBJECT_STR:
        if (!bp__utf8_ok(o->via.str.ptr, o->via.str.size))
            return bp_error_set(err, BP_EPROTO,
                                "field '%s': string is not valid UTF-8 or contains NUL", ctx);
        return BP_OK;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        if (!isfinite(o->via.f64))
            return bp_error_set(err, BP_EPROTO, "field '%s': float is not finite", ctx);
        return BP_OK;
    case MSGPACK_OBJECT_ARRAY:
        for (uint32_t i = 0; i < o->via.array.size; i++) {
            int rc = walk(&o->via.array.ptr[i], ctx, err);
            if (rc)
                return rc;
        }
        return BP_OK;
    case MSGPACK_OBJECT_MAP:
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR)
                return bp_error_set(err, BP_EPROTO, "field '%s': map key of type %s is not a string",
                                    ctx, bp__mp_type_name(kv->key.type));
            int rc = walk(&kv->key, ctx, err);
            if (!rc)
                rc = walk(&kv->val, ctx, err);
            if (rc)
                return rc;
        }
        return BP_OK;
    case MSGPACK_OBJECT_EXT:
        return bp_error_set(err, BP_EPROTO, "field '%s': ext objects are not allowed", ctx);
    default:
        return BP_OK;
    }
}

static bool ident_ok(const char *s, size_t n, size_t max, bool loose)
{
    if (n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
        if (loose)
            ok = ok || (c >= 'A' && c <= 'Z') || c == '.' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

static int check_str(const msgpack_object *v, sclass sc, const bp_proto_limits *lim,
                     const char *ctx, const char *key, bp_str *out, bp_error *err)
{
    if (v->type != MSGPACK_OBJECT_STR)
        return bp_error_set(err, BP_EPROTO, "%s: field '%s': expected a string, got %s", ctx,
                            key, bp__mp_type_name(v->type));
    size_t n = v->via.str.size, min = 1, max = 0;
    switch (sc) {
    case S_NAME: max = lim->max_name_bytes; break;
    case S_TEXT: max = lim->max_text_bytes; min = 0; break;
    case S_SPEC: max = lim->max_job_spec_bytes; break;
    case S_PLAN: max = lim->max_plan_bytes; break;
    case S_IDENT: max = IDENT_MAX; break;
    case S_NONE: max = lim->max_name_bytes; break;
    }
    if (n < min)
        return bp_error_set(err, BP_EPROTO, "%s: field '%s': empty string", ctx, key);
    if (n > max)
        return bp_error_set(err, BP_EPROTO, "%s: field '%s': string of %zu bytes exceeds %zu",
                            ctx, key, n, max);
    if (sc == S_IDENT && !ident_ok(v->via.str.ptr, n, IDENT_MAX, false)) {
        char show[BP__SHOW_CAP];
        return bp_error_set(err, BP_EPROTO, "%s: field '%s': '%s' is not an identifier [a-z0-9_]",
                            ctx, key, bp__show(v->via.str.ptr, n, show, sizeof show));
    }
    out->ptr = v->via.str.ptr;
    out->len = n;
    return BP_OK;
}

static int get_u64(const msgpack_object *v, uint64_t lo, uint64_t hi, const char *ctx,
                   const char *key, uint64_t *out, bp_error *err)
{
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return bp_error_set(err, BP_EPROTO,
                            "%s: field '%s': expected an unsigned integer, got %s", ctx, key,
                            bp__mp_type_name(v->type));
    if (v->via.u64 < lo || v->via.u64 > hi)
        return bp_error_set(err, BP_EPROTO, "%s: field '%s': %llu is outside [%llu, %llu]", ctx,
                            key, (unsigned long long)v->via.u64, (unsigned long long)lo,
                            (unsigned long long)hi);
    *out = v->via.u64;
    return BP_OK;
}

static int get_i32(const msgpack_object *v, const char *ctx, const char *key, int32_t *out,
                   bp_error *err)
{
    if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (v->via.u64 > INT32_MAX)
            goto range;
        *out = (int32_t)v->via.u64;
        return BP_OK;
    }
    if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        if (v->via.i64 < INT32_MIN)
            goto range;
        *out = (int32_t)v->via.i64;
        return BP_OK;
    }
    return bp_error_set(err, BP_EPROTO, "%s: field '%s': expected an integer, got %s", ctx, key,
                        bp__mp_type_name(v->type));
range:
    return bp_error_set(err, BP_EPROTO, "%s: field '%s': integer outside the int32 range", ctx,
                        key);
}

static int get_f64(const msgpack_object *v, double lo, double hi, const char *ctx,
                   const char *key, double *out, bp_error *err)
{
    double d;
    if (v->type == MSGPACK_OBJECT_FLOAT32 || v->type == MSGPACK_OBJECT_FLOAT64)
        d = v->via.f64;
    else if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        d = (double)v->via.u64;
    else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        d = (double)v->via.i64;
    else
        return bp_error_set(err, BP_EPROTO, "%s: field '%s': expected a number, got %s", ctx, key,
                            bp__mp_type_name(v->type));
    if (!isfinite(d))
        return bp_error_set(err, BP_EPROTO, "%s: field '%s': not finite", ctx, key);
    if (d < lo || d > hi)
        return bp_error_set(err, BP_EPROTO, "%s: field '%s': %g is outside [%g, %g]", ctx, key, d,
                            lo, hi);
    *out = d;
    return BP_OK;
}

static int decode_jobs(const msgpack_object *v, const bp_proto_limits *lim, bp_msg *out,
                       bp_error *err)
{
    static const char *const names[] = {"job", "state", "done", "total"};
    const char *ctx = "jobs_reply";
    if (v->type != MSGPACK_OBJECT_ARRAY)
        return bp_error_set(err, BP_EPROTO, "%s: field 'jobs': expected an array, got %s", ctx,
                            bp__mp_type_name(v->type));
    size_t n = v->via.array.size;
    if (n > lim->max_jobs)
        return bp_error_set(err, BP_EPROTO, "%s: field 'jobs': %zu entries exceed the limit %zu",
                            ctx, n, lim->max_jobs);
    bp_proto_job_entry *jobs = NULL;
    if (n > 0) {
        jobs = calloc(n, sizeof *jobs);
        if (!jobs)
            return bp_error_set(err, BP_ENOMEM, "%s: out of memory for %zu entries", ctx, n);
    }
    out->priv_alloc = jobs; /* freed by bp_msg_clear on every path */
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *e = &v->via.array.ptr[i];
        char ectx[64];
        snprintf(ectx, sizeof ectx, "jobs_reply: jobs[%zu]", i);
        if (e->type != MSGPACK_OBJECT_MAP)
            return bp_error_set(err, BP_EPROTO, "%s: expected a map, got %s", ectx,
                                bp__mp_type_name(e->type));
        const msgpack_object *vals[4];
        int rc = match_keys(e, names, 4, vals, ectx, err);
        for (int k = 0; !rc && k < 4; k++)
            if (!vals[k])
                rc = bp_error_set(err, BP_EPROTO, "%s: missing required field '%s'", ectx,
                                  names[k]);
        if (!rc)
            rc = check_str(vals[0], S_NAME, lim, ectx, "job", &jobs[i].job, err);
        if (!rc)
            rc = check_str(vals[1], S_IDENT, lim, ectx, "state", &jobs[i].state, err);
        if (!rc)
            rc = get_u64(vals[2], 0, UINT64_MAX, ectx, "done", &jobs[i].done, err);
        if (!rc)
            rc = get_u64(vals[3], 0, UINT64_MAX, ectx, "total", &jobs[i].total, err);
        if (!rc && jobs[i].done > jobs[i].total)
            rc = bp_error_set(err, BP_EPROTO, "%s: done %llu exceeds total %llu", ectx,
                              (unsigned long long)jobs[i].done,
                              (unsigned long long)jobs[i].total);
        if (rc)
            return rc;
    }
    out->u.jobs_reply.jobs = jobs;
    out->u.jobs_reply.n_jobs = n;
    return BP_OK;
}

static int parse_dtype(const msgpack_object *v, bp_wire_dtype *d)
{
    static const bp_wire_dtype all[] = {BP_WIRE_F32, BP_WIRE_F64, BP_WIRE_U8, BP_WIRE_U16,
                                        BP_WIRE_I64};
    if (v->type != MSGPACK_OBJECT_STR)
        return -1;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        const char *nm = bp_wire_dtype_name(all[i]);
        if (key_is(v, nm, strlen(nm))) {
            *d = all[i];
            return 0;
        }
    }
    return -1;
}

static bool all_finite(const bp_bin_view *b)
{
    const unsigned char *p = b->data;
    if (b->dtype == BP_WIRE_F32) {
        for (uint64_t i = 0; i < b->count; i++) {
            float f;
            memcpy(&f, p + 4 * i, 4);
            if (!isfinite(f))
                return false;
        }
    } else if (b->dtype == BP_WIRE_F64) {
        for (uint64_t i = 0; i < b->count; i++) {
            double f;
            memcpy(&f, p + 8 * i, 8);
            if (!isfinite(f))
                return false;
        }
    }
    return true;
}

/* "bin" declarations and the binary frames they describe. */
static int decode_bins(const msgpack_object *v, const bp_frame *frames, size_t n_frames,
                       const bp_proto_limits *lim, const char *ctx, bp_msg *out, bp_error *err)
{
    static const char *const names[] = {"name", "dtype", "count"};
    size_t nb = 0;
    if (v) {
        if (v->type != MSGPACK_OBJECT_ARRAY)
            return bp_error_set(err, BP_EPROTO, "%s: field 'bin': expected an array, got %s",
                                ctx, bp__mp_type_name(v->type));
        nb = v->via.array.size;
        if (nb > lim->max_bin_frames)
            return bp_error_set(err, BP_EPROTO,
                                "%s: field 'bin': %zu binary frames exceed the limit %zu", ctx,
                                nb, lim->max_bin_frames);
    }
    if (n_frames != 1 + nb)
        return bp_error_set(err, BP_EPROTO,
                            "%s: header declares %zu binary frames but the message has %zu "
                            "frames (expected %zu): %s",
                            ctx, nb, n_frames, 1 + nb,
                            n_frames > 1 + nb ? "too many frames" : "too few frames");
    for (size_t i = 0; i < nb; i++) {
        const msgpack_object *e = &v->via.array.ptr[i];
        bp_bin_view *b = &out->bin[i];
        char ectx[64];
        snprintf(ectx, sizeof ectx, "%s: bin[%zu]", ctx, i);
        if (e->type != MSGPACK_OBJECT_MAP)
            return bp_error_set(err, BP_EPROTO, "%s: expected a map, got %s", ectx,
                                bp__mp_type_name(e->type));
        const msgpack_object *vals[3];
        int rc = match_keys(e, names, 3, vals, ectx, err);
        for (int k = 0; !rc && k < 3; k++)
            if (!vals[k])
                rc = bp_error_set(err, BP_EPROTO, "%s: missing required field '%s'", ectx,
                                  names[k]);
        if (rc)
            return rc;
        if (vals[0]->type != MSGPACK_OBJECT_STR ||
            !ident_ok(vals[0]->via.str.ptr, vals[0]->via.str.size, 64, true))
            return bp_error_set(err, BP_EPROTO,
                                "%s: field 'name': expected 1..64 bytes of [A-Za-z0-9_.-]", ectx);
        b->name.ptr = vals[0]->via.str.ptr;
        b->name.len = vals[0]->via.str.size;
        for (size_t j = 0; j < i; j++)
            if (out->bin[j].name.len == b->name.len &&
                memcmp(out->bin[j].name.ptr, b->name.ptr, b->name.len) == 0)
                return bp_error_set(err, BP_EPROTO, "%s: duplicate binary frame name", ectx);
        if (parse_dtype(vals[1], &b->dtype) != 0)
            return bp_error_set(err, BP_EPROTO,
                                "%s: field 'dtype': expected one of f32, f64, u8, u16, i64", ectx);
        if (vals[2]->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            return bp_error_set(err, BP_EPROTO,
                                "%s: field 'count': expected an unsigned integer, got %s", ectx,
                                bp__mp_type_name(vals[2]->type));
        b->count = vals[2]->via.u64;
        size_t es = bp_wire_dtype_size(b->dtype);
        if (b->count > SIZE_MAX / es)
            return bp_error_set(err, BP_EPROTO, "%s: count %llu x %zu bytes overflows", ectx,
                                (unsigned long long)b->count, es);
        size_t want = (size_t)b->count * es;
        if (want > lim->max_frame_bytes)
            return bp_error_set(err, BP_EPROTO,
                                "%s: %zu bytes exceed the binary frame limit %zu", ectx, want,
                                lim->max_frame_bytes);
        const bp_frame *f = &frames[1 + i];
        if (f->size != want)
            return bp_error_set(err, BP_EPROTO,
                                "%s: frame size %zu != count %llu x %zu bytes (%s)", ectx,
                                f->size, (unsigned long long)b->count, es,
                                bp_wire_dtype_name(b->dtype));
        if (f->size && !f->data)
            return bp_error_set(err, BP_EINVAL, "%s: NULL frame data", ectx);
        b->data = f->size ? f->data : "";
        b->size = f->size;
        if (!lim->allow_nonfinite_bin && !all_finite(b))
            return bp_error_set(err, BP_EPROTO, "%s: %s frame holds a non-finite value", ectx,
                                bp_wire_dtype_name(b->dtype));
    }
    out->n_bin = nb;
    return BP_OK;
}

static int decode_field(const field *f, const msgpack_object *v, const bp_proto_limits *lim,
                        const char *ctx, bp_msg *out, bp_error *err)
{
    char *base = (char *)out;
    bool nil = !v || v->type == MSGPACK_OBJECT_NIL;
    if (nil) {
        if (!(f->flags & OPT)) {
            if (!v)
                return bp_error_set(err, BP_EPROTO, "%s: missing required field '%s'", ctx,
                                    f->key);
            return bp_error_set(err, BP_EPROTO, "%s: field '%s': required, got nil", ctx, f->key);
        }
        return BP_OK; /* has_ flags and str ptr stay false/NULL */
    }
    switch (f->kind) {
    case F_STR:
        return check_str(v, f->sc, lim, ctx, f->key, (bp_str *)(base + f->off), err);
    case F_U64:
        if (f->has_off != NO_HAS)
            *(bool *)(base + f->has_off) = true;
        return get_u64(v, f->umin, f->umax, ctx, f->key, (uint64_t *)(base + f->off), err);
    case F_I32:
        if (f->has_off != NO_HAS)
            *(bool *)(base + f->has_off) = true;
        return get_i32(v, ctx, f->key, (int32_t *)(base + f->off), err);
    case F_F64:
        if (f->has_off != NO_HAS)
            *(bool *)(base + f->has_off) = true;
        return get_f64(v, f->fmin, f->fmax, ctx, f->key, (double *)(base + f->off), err);
    case F_MAP:
        if (v->type != MSGPACK_OBJECT_MAP)
            return bp_error_set(err, BP_EPROTO, "%s: field '%s': expected a map, got %s", ctx,
                                f->key, bp__mp_type_name(v->type));
        *(const msgpack_object **)(base + f->off) = v;
        return BP_OK;
    case F_JOBS:
        return decode_jobs(v, lim, out, err);
    }
    return bp_error_set(err, BP_EPROTO, "%s: internal: bad field kind", ctx);
}

static int lookup_type(const msgpack_object *t, bp_msg_type *out)
{
    for (int i = BP_MSG_NONE + 1; i < BP_MSG_TYPE_COUNT; i++)
        if (key_is(t, msgdefs[i].name, strlen(msgdefs[i].name))) {
            *out = (bp_msg_type)i;
            return 0;
        }
    return -1;
}

static int decode_impl(const bp_frame *frames, size_t n, const bp_proto_limits *lim,
                       bp_msg *out, bp_error *err)
{
    if (!frames || n == 0)
        return bp_error_set(err, BP_EPROTO, "message has no frames");
    if (n > 1 + lim->max_bin_frames)
        return bp_error_set(err, BP_EPROTO,
                            "message has %zu frames, at most %zu allowed: too many frames", n,
                            1 + lim->max_bin_frames);
    const bp_frame *h = &frames[0];
    if (h->size > lim->max_header_bytes)
        return bp_error_set(err, BP_EPROTO, "header frame of %zu bytes exceeds the limit %zu",
                            h->size, lim->max_header_bytes);
    if (h->size && !h->data)
        return bp_error_set(err, BP_EINVAL, "header frame: NULL data");

    /* Stage 1: structure, so msgpack-c cannot be asked to over-allocate. */
    bp_wire_limits wl = {lim->max_depth, lim->max_nodes};
    int rc = bp_wire_check(h->data, h->size, &wl, err);
    if (rc) {
        bp_error_prefix(err, "header");
        return rc;
    }

    /* Stage 2: msgpack-c; strings point into the frame. */
    size_t off = 0;
    msgpack_unpack_return ur =
        msgpack_unpack_next(&out->priv_unpacked, h->data, h->size, &off);
    if (ur != MSGPACK_UNPACK_SUCCESS) {
        /* NOMEM after wire_check means nesting or a hostile size, not OOM. */
        return bp_error_set(err, BP_EPROTO, "header: msgpack decoder failed (%s)",
                            ur == MSGPACK_UNPACK_CONTINUE      ? "truncated"
                            : ur == MSGPACK_UNPACK_NOMEM_ERROR ? "refused allocation"
                                                               : "parse error");
    }
    if (off != h->size)
        return bp_error_set(err, BP_EPROTO, "header: %zu trailing bytes", h->size - off);

    /* Stage 3: schema. */
    const msgpack_object *root = &out->priv_unpacked.data;
    if (root->type != MSGPACK_OBJECT_MAP)
        return bp_error_set(err, BP_EPROTO, "header is not a map (got %s)",
                            bp__mp_type_name(root->type));

    /* The id first, so any failure below, even a version mismatch, can
     * still be answered. */
    const msgpack_object *idv;
    if ((rc = find_key(root, "id", &idv, "header", err)))
        return rc;
    if (idv && idv->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        out->id = idv->via.u64;
        out->has_id = true;
    }

    const msgpack_object *v;
    if ((rc = find_key(root, "v", &v, "header", err)))
        return rc;
    if (!v)
        return bp_error_set(err, BP_EPROTO, "header: missing required field 'v'");
    if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (v->via.u64 != BP_PROTO_VERSION)
            return bp_error_set(err, BP_EPROTO,
                                "unsupported protocol version %llu (this build speaks %d)",
                                (unsigned long long)v->via.u64, BP_PROTO_VERSION);
    } else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        return bp_error_set(err, BP_EPROTO,
                            "unsupported protocol version %lld (this build speaks %d)",
                            (long long)v->via.i64, BP_PROTO_VERSION);
    } else {
        return bp_error_set(err, BP_EPROTO, "header: field 'v': expected an integer, got %s",
                            bp__mp_type_name(v->type));
    }
    out->version = BP_PROTO_VERSION;

    for (uint32_t i = 0; i < root->via.map.size; i++) {
        const msgpack_object_kv *kv = &root->via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR)
            return bp_error_set(err, BP_EPROTO, "header: map key of type %s is not a string",
                                bp__mp_type_name(kv->key.type));
        if (!bp__utf8_ok(kv->key.via.str.ptr, kv->key.via.str.size))
            return bp_error_set(err, BP_EPROTO,
                                "header: key is not valid UTF-8 or contains NUL");
        char kname[BP__SHOW_CAP];
        bp__show(kv->key.via.str.ptr, kv->key.via.str.size, kname, sizeof kname);
        if ((rc = walk(&kv->val, kname, err)))
            return rc;
    }

    const msgpack_object *t;
    if ((rc = find_key(root, "t", &t, "header", err)))
        return rc;
    if (!t)
        return bp_error_set(err, BP_EPROTO, "header: missing required field 't'");
    if (t->type != MSGPACK_OBJECT_STR)
        return bp_error_set(err, BP_EPROTO, "header: field 't': expected a string, got %s",
                            bp__mp_type_name(t->type));
    bp_msg_type type;
    if (lookup_type(t, &type) != 0) {
        char show[BP__SHOW_CAP];
        return bp_error_set(err, BP_EPROTO, "unknown message type '%s'",
                            bp__show(t->via.str.ptr, t->via.str.size, show, sizeof show));
    }
    const msgdef *def = &msgdefs[type];
    if (lim->accept && !(lim->accept & def->senders))
        return bp_error_set(err, BP_EPROTO, "message type '%s' is not accepted from this peer",
                            def->name);
    if (!idv)
        return bp_error_set(err, BP_EPROTO, "%s: missing required field 'id'", def->name);
    if (!out->has_id)
        return bp_error_set(err, BP_EPROTO, "%s: field 'id': expected an unsigned integer, got %s",
                            def->name, bp__mp_type_name(idv->type));

    const char *names[MAX_KEYS] = {"v", "t", "id", def->has_bin ? "bin" : NULL};
    const msgpack_object *vals[MAX_KEYS];
    for (size_t i = 0; i < def->n_fields; i++)
        names[HK_FIELDS + i] = def->fields[i].key;
    if ((rc = match_keys(root, names, HK_FIELDS + def->n_fields, vals, def->name, err)))
        return rc;
    for (size_t i = 0; i < def->n_fields; i++)
        if ((rc = decode_field(&def->fields[i], vals[HK_FIELDS + i], lim, def->name, out, err)))
            return rc;

    /* Cross-field rules. */
    if (type == BP_MSG_STATUS_REPLY && out->u.status_reply.done > out->u.status_reply.total)
        return bp_error_set(err, BP_EPROTO, "status_reply: done %llu exceeds total %llu",
                            (unsigned long long)out->u.status_reply.done,
                            (unsigned long long)out->u.status_reply.total);
    if ((type == BP_MSG_ERROR && out->u.error.code == 0) ||
        (type == BP_MSG_TASK_FAILED && out->u.task_failed.code == 0))
        return bp_error_set(err, BP_EPROTO, "%s: field 'code': 0 means success, not an error",
                            def->name);

    if ((rc = decode_bins(vals[HK_BIN], frames, n, lim, def->name, out, err)))
        return rc;
    out->type = type;
    return BP_OK;
}

int bp_proto_decode(const bp_frame *frames, size_t n, const bp_proto_limits *limits,
                    bp_msg *out, bp_error *err)
{
    if (!out)
        return bp_error_set(err, BP_EINVAL, "decode: NULL output message");
    bp_msg_clear(out);
    bp_proto_limits lim;
    bp__proto_limits_resolve(limits, &lim);
    int rc = decode_impl(frames, n, &lim, out, err);
    if (rc) {
        uint64_t id = out->id;
        bool has = out->has_id;
        bp_msg_clear(out);
        out->id = id;
        out->has_id = has;
    }
    return rc;
}

const bp_bin_view *bp_msg_find_bin(const bp_msg *m, const char *name)
{
    if (!m || !name)
        return NULL;
    size_t n = strlen(name);
    for (size_t i = 0; i < m->n_bin && i < BP_PROTO_MAX_BIN; i++)
        if (m->bin[i].name.len == n && memcmp(m->bin[i].name.ptr, name, n) == 0)
            return &m->bin[i];
    return NULL;
}

int bp_proto_bin_copy(const bp_bin_view *v, bp_wire_dtype dtype, void *dst, size_t dst_bytes,
                      bp_error *err)
{
    if (!v || (!dst && dst_bytes))
        return bp_error_set(err, BP_EINVAL, "bin copy: NULL argument");
    char show[BP__SHOW_CAP];
    bp__show(v->name.ptr, v->name.len, show, sizeof show);
    if (v->dtype != dtype)
        return bp_error_set(err, BP_EMISMATCH, "binary frame '%s': dtype %s, expected %s", show,
                            bp_wire_dtype_name(v->dtype), bp_wire_dtype_name(dtype));
    if (v->size != dst_bytes)
        return bp_error_set(err, BP_EMISMATCH, "binary frame '%s': %zu bytes, expected %zu",
                            show, v->size, dst_bytes);
    if (dst_bytes)
        memcpy(dst, v->data, dst_bytes);
    return BP_OK;
}

/* ---- Encoding --------------------------------------------------------- */

void bp_proto_out_init(bp_proto_out *out, const bp_proto_limits *lim)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    msgpack_sbuffer_init(&out->header);
    bp__proto_limits_resolve(lim, &out->limits);
}

void bp_proto_out_clear(bp_proto_out *out)
{
    if (!out)
        return;
    msgpack_sbuffer_destroy(&out->header);
    msgpack_sbuffer_init(&out->header);
    out->n_bin = 0;
}

size_t bp_proto_out_frames(const bp_proto_out *out, bp_frame *frames, size_t cap)
{
    if (!out || out->header.size == 0 || out->n_bin > BP_PROTO_MAX_BIN || cap < 1 + out->n_bin)
        return 0;
    frames[0].data = out->header.data;
    frames[0].size = out->header.size;
    for (size_t i = 0; i < out->n_bin; i++)
        frames[1 + i] = out->bin[i];
    return 1 + out->n_bin;
}

static int pack_str(msgpack_packer *pk, const char *s, size_t n)
{
    int r = msgpack_pack_str(pk, n);
    if (n)
        r |= msgpack_pack_str_body(pk, s, n);
    return r;
}

static int pack_bstr(msgpack_packer *pk, bp_str s)
{
    if (!s.ptr)
        return msgpack_pack_nil(pk);
    return pack_str(pk, s.ptr, s.len);
}

static int pack_key(msgpack_packer *pk, const char *k)
{
    return pack_str(pk, k, strlen(k));
}

typedef struct raw_map {
    const void *data;
    size_t len;
} raw_map;

static int pack_field(msgpack_packer *pk, msgpack_sbuffer *sb, const field *f, const bp_msg *m,
                      const raw_map *raw)
{
    const char *base = (const char *)m;
    bool has = f->has_off == NO_HAS || *(const bool *)(base + f->has_off);
    int r = pack_key(pk, f->key);
    if (!has)
        return r | msgpack_pack_nil(pk);
    switch (f->kind) {
    case F_STR:
        return r | pack_bstr(pk, *(const bp_str *)(base + f->off));
    case F_U64:
        return r | msgpack_pack_uint64(pk, *(const uint64_t *)(base + f->off));
    case F_I32:
        return r | msgpack_pack_int32(pk, *(const int32_t *)(base + f->off));
    case F_F64:
        return r | msgpack_pack_double(pk, *(const double *)(base + f->off));
    case F_MAP: {
        const msgpack_object *o = *(const msgpack_object *const *)(base + f->off);
        if (raw && raw->data && raw->len)
            return r | msgpack_sbuffer_write(sb, raw->data, raw->len);
        if (o)
            return r | msgpack_pack_object(pk, *o);
        return r | msgpack_pack_map(pk, 0);
    }
    case F_JOBS: {
        const bp_proto_job_entry *j = m->u.jobs_reply.jobs;
        size_t n = m->u.jobs_reply.n_jobs;
        if (n > UINT32_MAX)
            return -1;
        r |= msgpack_pack_array(pk, n);
        for (size_t i = 0; i < n; i++) {
            r |= msgpack_pack_map(pk, 4);
            r |= pack_key(pk, "job") | pack_bstr(pk, j[i].job);
            r |= pack_key(pk, "state") | pack_bstr(pk, j[i].state);
            r |= pack_key(pk, "done") | msgpack_pack_uint64(pk, j[i].done);
            r |= pack_key(pk, "total") | msgpack_pack_uint64(pk, j[i].total);
        }
        return r;
    }
    }
    return -1;
}

static bool bstr_bad(bp_str s)
{
    return !s.ptr && s.len;
}

/* Caller-side mistakes that would make packing itself unsafe. */
static int check_args(const bp_msg *m, const msgdef *def, bp_error *err)
{
    if (m->n_bin > BP_PROTO_MAX_BIN)
        return bp_error_set(err, BP_EINVAL, "encode %s: %zu binary frames exceed %d", def->name,
                            m->n_bin, BP_PROTO_MAX_BIN);
    if (m->n_bin && !def->has_bin)
        return bp_error_set(err, BP_EINVAL, "encode %s: this type carries no binary frames",
                            def->name);
    for (size_t i = 0; i < m->n_bin; i++)
        if (bstr_bad(m->bin[i].name) || !m->bin[i].name.ptr || (!m->bin[i].data && m->bin[i].size))
            return bp_error_set(err, BP_EINVAL, "encode %s: bin[%zu]: NULL name or data",
                                def->name, i);
    for (size_t i = 0; i < def->n_fields; i++) {
        const field *f = &def->fields[i];
        if (f->kind == F_STR && bstr_bad(*(const bp_str *)((const char *)m + f->off)))
            return bp_error_set(err, BP_EINVAL, "encode %s: field '%s': NULL with length",
                                def->name, f->key);
    }
    if (m->type == BP_MSG_JOBS_REPLY) {
        const bp_proto_job_entry *j = m->u.jobs_reply.jobs;
        if (!j && m->u.jobs_reply.n_jobs)
            return bp_error_set(err, BP_EINVAL, "encode jobs_reply: NULL jobs");
        for (size_t i = 0; i < m->u.jobs_reply.n_jobs; i++)
            if (bstr_bad(j[i].job) || bstr_bad(j[i].state))
                return bp_error_set(err, BP_EINVAL, "encode jobs_reply: jobs[%zu]: NULL string",
                                    i);
    }
    return BP_OK;
}

static int encode_impl(bp_proto_out *out, const bp_msg *m, const raw_map *raw, bp_error *err)
{
    if (!out || !m)
        return bp_error_set(err, BP_EINVAL, "encode: NULL argument");
    msgpack_sbuffer_clear(&out->header);
    out->n_bin = 0;
    if ((int)m->type <= BP_MSG_NONE || (int)m->type >= BP_MSG_TYPE_COUNT)
        return bp_error_set(err, BP_EINVAL, "encode: invalid message type %d", (int)m->type);
    const msgdef *def = &msgdefs[m->type];
    int rc = check_args(m, def, err);
    if (rc)
        return rc;
    if (raw && raw->data && raw->len) {
        /* Exactly one well-formed map, or it could splice keys into the header. */
        uint8_t b0 = ((const uint8_t *)raw->data)[0];
        bool is_map = (b0 & 0xf0) == 0x80 || b0 == 0xde || b0 == 0xdf;
        rc = bp_wire_check(raw->data, raw->len, NULL, err);
        if (!rc && !is_map)
            rc = bp_error_set(err, BP_EINVAL, "not a map");
        if (rc) {
            bp_error_prefix(err, "encode %s: pre-encoded map", def->name);
            if (err)
                err->code = BP_EINVAL;
            return BP_EINVAL;
        }
    }

    msgpack_packer pk;
    msgpack_packer_init(&pk, &out->header, msgpack_sbuffer_write);
    int r = msgpack_pack_map(&pk, HK_FIELDS - 1 + def->n_fields + (m->n_bin ? 1 : 0));
    r |= pack_key(&pk, "v") | msgpack_pack_uint32(&pk, BP_PROTO_VERSION);
    r |= pack_key(&pk, "t") | pack_key(&pk, def->name);
    r |= pack_key(&pk, "id") | msgpack_pack_uint64(&pk, m->id);
    for (size_t i = 0; i < def->n_fields; i++)
        r |= pack_field(&pk, &out->header, &def->fields[i], m, raw);
    if (m->n_bin) {
        r |= pack_key(&pk, "bin") | msgpack_pack_array(&pk, m->n_bin);
        for (size_t i = 0; i < m->n_bin; i++) {
            const bp_bin_view *b = &m->bin[i];
            r |= msgpack_pack_map(&pk, 3);
            r |= pack_key(&pk, "name") | pack_bstr(&pk, b->name);
            r |= pack_key(&pk, "dtype") | pack_key(&pk, bp_wire_dtype_name(b->dtype));
            r |= pack_key(&pk, "count") | msgpack_pack_uint64(&pk, b->count);
            out->bin[i].data = b->data;
            out->bin[i].size = b->size;
        }
        out->n_bin = m->n_bin;
    }
    if (r) {
        rc = bp_error_set(err, BP_ENOMEM, "encode %s: out of memory", def->name);
        goto out;
    }

    /* Self-check: what we send must pass the peer's decoder. */
    bp_frame frames[1 + BP_PROTO_MAX_BIN];
    size_t nf = bp_proto_out_frames(out, frames, 1 + BP_PROTO_MAX_BIN);
    bp_msg check;
    bp_msg_init(&check);
    rc = bp_proto_decode(frames, nf, &out->limits, &check, err);
    bp_msg_clear(&check);
    if (rc == BP_EPROTO || rc == BP_EINVAL) {
        bp_error_prefix(err, "encode %s", def->name);
        if (err)
            err->code = BP_EINVAL;
        rc = BP_EINVAL;
    }
out:
    if (rc) {
        msgpack_sbuffer_clear(&out->header);
        out->n_bin = 0;
    }
    return rc;
}

int bp_proto_encode(bp_proto_out *out, const bp_msg *msg, bp_error *err)
{
    return encode_impl(out, msg, NULL, err);
}

/* Per-type wrappers: fill a bp_msg on the stack and encode it. */
#define BEGIN(T)            \
    bp_msg m;               \
    memset(&m, 0, sizeof m); \
    m.type = T;             \
    m.id = id

int bp_proto_encode_submit(bp_proto_out *out, uint64_t id, bp_str job_spec, bp_error *err)
{
    BEGIN(BP_MSG_SUBMIT);
    m.u.submit.job = job_spec;
    return encode_impl(out, &m, NULL, err);
}

int bp_proto_encode_status(bp_proto_out *out, uint64_t id, bp_str job, bp_error *err)
{
    BEGIN(BP_MSG_STATUS);
    m.u.status.job = job;
    return encode_impl(out, &m, NULL, err);
}

int bp_proto_encode_result(bp_proto_out *out, uint64_t id, bp_str job, bp_error *err)
{
    BEGIN(BP_MSG_RESULT);
    m.u.result.job = job;
    return encode_impl(out, &m, NULL, err);
}

int bp_proto_encode_cancel(bp_proto_out *out, uint64_t id, bp_str job, bp_error *err)
{
    BEGIN(BP_MSG_CANCEL);
    m.u.cancel.job = job;
    return encode_impl(out, &m, NULL, err);
}

int bp_proto_encode_jobs(bp_proto_out *out, uint64_t id, bp_error *err)
{
    BEGIN(BP_MSG_JOBS);
    return encode_impl(out, &m, NULL, err);
}

int bp_proto_encode_submitted(bp_proto_out *out, uint64_t id, bp_str job, bp_error *err)
{
    BEGIN(BP_MSG_SUBMITTED);
    m.u.submitted.job = job;
    return encode_impl(out, &m, NULL, err);
}

int bp_proto_encode_status_reply(bp_proto_out *out, uint64_t id, const bp_msg_status_reply *st,
                                 bp_error *err)
{
    if (!st)
        return bp_error_set(err, BP_EINVAL, "encode status_reply: NULL fields");
    BEGIN(BP_MSG_STATUS_REPLY);
    m.u.status_reply = *st;
    return encode_impl(out, &m, NULL, err);
}

int bp_proto_encode_result_reply(bp_proto_out *out, uint64_t id, bp_str job, bp_str plan,
                                 bp_error *err)
{
    BEGIN(BP_MSG_RESULT_REPLY);
    m.u.result_reply.job = job;
    m.u.result_reply.plan = plan;
    return encode_impl(out, &m, NULL, err);
}

int bp_proto_encode_jobs_reply(bp_proto_out *out, uint64_t id, const bp_proto_job_entry *jobs,
                               size_t n_jobs, bp_error *err)
{
    BEGIN(BP_MSG_JOBS_REPLY);
    m.u.jobs_reply.jobs = jobs;
    m.u.jobs_reply.n_jobs = n_jobs;
    return encode_impl(out, &m, NULL, err);
}

int bp_proto_encode_ok(bp_proto_out *out, uint64_t id, bp_error *err)
{
    BEGIN(BP_MSG_OK);
    return encode_impl(out, &m, NULL, err);
}

int bp_proto_encode_error(bp_proto_out *out, uint64_t id, int32_t code, bp_str message,
                          bp_error *err)
{
    BEGIN(BP_MSG_ERROR);
    m.u.error.code = code;
    m.u.error.message = message;
    return encode_impl(out, &m, NULL, err);
}

int bp_proto_encode_ready(bp_proto_out *out, uint64_t id, bp_str worker, uint64_t threads,
                          uint64_t pid, bp_error *err)
{
    BEGIN(BP_MSG_READY);
    m.u.ready.worker = worker;
    m.u.ready.threads = threads;
    m.u.ready.pid = pid;
    return encode_impl(out, &m, NULL, err);
}

int bp_proto_encode_heartbeat(bp_proto_out *out, uint64_t id, uint64_t progress,
                              const uint64_t *task, bp_error *err)
{
    BEGIN(BP_MSG_HEARTBEAT);
    m.u.heartbeat.progress = progress;
    m.u.heartbeat.has_task = task != NULL;
    m.u.heartbeat.task = task ? *task : 0;
    return encode_impl(out, &m, NULL, err);
}

static int set_bins(bp_msg *m, const bp_bin_view *bins, size_t n_bins, bp_error *err)
{
    if (n_bins > BP_PROTO_MAX_BIN || (n_bins && !bins))
        return bp_error_set(err, BP_EINVAL, "encode %s: %zu binary frames (at most %d)",
                            bp_msg_type_name(m->type), n_bins, BP_PROTO_MAX_BIN);
    for (size_t i = 0; i < n_bins; i++)
        m->bin[i] = bins[i];
    m->n_bin = n_bins;
    return BP_OK;
}

int bp_proto_encode_task_result(bp_proto_out *out, uint64_t id, uint64_t task, bp_str hash,
                                const void *result_mp, size_t result_mp_len,
                                const bp_bin_view *bins, size_t n_bins, bp_error *err)
{
    BEGIN(BP_MSG_TASK_RESULT);
    m.u.task_result.task = task;
    m.u.task_result.hash = hash;
    int rc = set_bins(&m, bins, n_bins, err);
    if (rc)
        return rc;
    raw_map raw = {result_mp, result_mp ? result_mp_len : 0};
    return encode_impl(out, &m, &raw, err);
}

int bp_proto_encode_task_failed(bp_proto_out *out, uint64_t id, uint64_t task, int32_t code,
                                bp_str message, bp_error *err)
{
    BEGIN(BP_MSG_TASK_FAILED);
    m.u.task_failed.task = task;
    m.u.task_failed.code = code;
    m.u.task_failed.message = message;
    return encode_impl(out, &m, NULL, err);
}

int bp_proto_encode_disconnect(bp_proto_out *out, uint64_t id, bp_error *err)
{
    BEGIN(BP_MSG_DISCONNECT);
    return encode_impl(out, &m, NULL, err);
}

int bp_proto_encode_welcome(bp_proto_out *out, uint64_t id, uint64_t heartbeat_ms,
                            uint64_t liveness, bp_error *err)
{
    BEGIN(BP_MSG_WELCOME);
    m.u.welcome.heartbeat_ms = heartbeat_ms;
    m.u.welcome.liveness = liveness;
    return encode_impl(out, &m, NULL, err);
}

int bp_proto_encode_task(bp_proto_out *out, uint64_t id, uint64_t task, bp_str kind,
                         const void *params_mp, size_t params_mp_len, uint64_t deadline_ms,
                         const bp_bin_view *bins, size_t n_bins, bp_error *err)
{
    BEGIN(BP_MSG_TASK);
    m.u.task.task = task;
    m.u.task.kind = kind;
    m.u.task.deadline_ms = deadline_ms;
    int rc = set_bins(&m, bins, n_bins, err);
    if (rc)
        return rc;
    raw_map raw = {params_mp, params_mp ? params_mp_len : 0};
    return encode_impl(out, &m, &raw, err);
}
