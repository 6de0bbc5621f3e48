/* bitplan coord: the coordinator (see include/bitplan/coord.h and
 * docs/daemon.md). One thread, one zmq_poll loop over the client ROUTER,
 * the worker ROUTER and (with CURVE) the ZAP handler. */
#include "bitplan/coord.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include "bitplan/cache.h"
#include "bitplan/journal.h"
#include "bitplan/lease.h"
#include "bitplan/proto.h"
#include "bitplan/task.h"
#include "bitplan/worker.h"
#include "bitplan/wire_check.h"
#include "coord_internal.h"
#include "zap.h"

#define MAX_EVENTS 64
#define CLIENT_MAX_HEADER ((size_t)2 << 20) /* a 1 MiB spec plus framing */

enum { J_QUEUED, J_RUNNING, J_DONE, J_FAILED, J_CANCELED };
static const char *const job_state_names[] = {"queued", "running", "done", "failed", "canceled"};

struct job;

typedef struct ctask {
    uint64_t id;                      /* global task id (wire "task") */
    struct job *job;                  /* NULL once the job ended */
    uint64_t index;                   /* the driver's index */
    char kind[BP_TASK_KIND_MAX];
    char hash[BP_CACHE_MAX_HASH + 1];
    unsigned char *params;            /* one msgpack map, with "hash" */
    size_t params_len;
    bp_bin_view bins[BP_PROTO_MAX_BIN]; /* owned names and data */
    size_t n_bins;
    struct ctask *prev, *next;        /* job queue links */
    int queued;
} ctask;

typedef struct job {
    char id[BP_COORD_JOB_ID_MAX];
    uint64_t seq;
    int state;
    char *spec;
    size_t spec_len;
    const bp_job_driver_ops *ops;
    void *drv;
    ctask *qhead, *qtail;
    size_t n_queued;
    size_t n_leased;
    uint64_t done, total;             /* last known driver progress */
    char *result;
    int err_code;                     /* bp code */
    char *err_msg;
    int64_t started_ms;
} job;

typedef struct peer {
    int used;
    unsigned char rid[BP_PROTO_MAX_ROUTING_ID];
    size_t rid_len;
    uint64_t key;                     /* identity map key */
    char name[64];
    /* The ZAP User-Id (CURVE key) it registered with, "" without CURVE. */
    char user_id[BP_PROTO_MAX_USER_ID + 1];
    int mismatch_logged;
} peer;

struct bp_coord {
    bp_coord_opts o;
    char state_dir[PATH_MAX];
    void *zctx;
    void *client;
    void *workers;
    bp__zap *zap;
    bp_lease_table *leases;
    bp_journal *journal;
    bp_cache *cache;
    bp_proto_limits client_lim, worker_lim;
    bp_proto_in in;
    bp_msg msg;
    bp_proto_out out;
    peer *peers;                      /* [max_workers], indexed by lease wid */
    bp__u64map peer_map;              /* identity key -> peer */
    bp__u64map tasks;                 /* task id -> ctask */
    job **jobs;                       /* submission order */
    size_t n_jobs;
    size_t rr;                        /* dispatch round-robin cursor */
    uint64_t next_seq, next_task_id, msg_id;
    int64_t last_tick;
    bp_coord_stats st;
};

static void clog_(const bp_coord *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void clog_(const bp_coord *c, const char *fmt, ...)
{
    if (!c->o.log)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(c->o.log, "bitplan coordinator: ");
    vfprintf(c->o.log, fmt, ap);
    fputc('\n', c->o.log);
    fflush(c->o.log);
    va_end(ap);
}

void bp_coord_opts_default(bp_coord_opts *o)
{
    memset(o, 0, sizeof *o);
    o->heartbeat_ms = 1000;
    o->liveness = 3;
    o->stall_ms = 60000;
    o->max_attempts = 3;
    o->max_workers = 1024;
    o->max_jobs = 1000;
    o->max_active_jobs = 64;
    o->max_queued_tasks = 10000;
}

/* ---- tasks ------------------------------------------------------------- */

static void ctask_free(ctask *t)
{
    if (!t)
        return;
    free(t->params);
    for (size_t i = 0; i < t->n_bins; i++) {
        free((void *)t->bins[i].name.ptr);
        free((void *)t->bins[i].data);
    }
    free(t);
}

static void q_push(job *j, ctask *t, int front)
{
    t->queued = 1;
    t->prev = t->next = NULL;
    if (!j->qhead) {
        j->qhead = j->qtail = t;
    } else if (front) {
        t->next = j->qhead;
        j->qhead->prev = t;
        j->qhead = t;
    } else {
        t->prev = j->qtail;
        j->qtail->next = t;
        j->qtail = t;
    }
    j->n_queued++;
}

static void q_unlink(job *j, ctask *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else
        j->qhead = t->next;
    if (t->next)
        t->next->prev = t->prev;
    else
        j->qtail = t->prev;
    t->prev = t->next = NULL;
    t->queued = 0;
    j->n_queued--;
}

/* Forget a task that is not leased. */
static void task_drop(bp_coord *c, ctask *t)
{
    if (t->queued && t->job)
        q_unlink(t->job, t);
    (void)bp_lease_task_remove(c->leases, t->id);
    bp__u64map_del(&c->tasks, t->id);
    ctask_free(t);
}

static int ident_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 32)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return 0;
    return 1;
}

/* Copy params and add "hash" when the driver did not put it there: the
 * worker echoes params.hash in task_result (docs/protocol.md). */
static int copy_params(ctask *t, const bp_task_req *r, bp_error *err)
{
    const unsigned char *p = r->params_mp;
    size_t len = r->params_len;
    static const unsigned char empty_map = 0x80;
    if (!p || !len) {
        p = &empty_map;
        len = 1;
    }
    if (bp_wire_check(p, len, NULL, NULL) != BP_OK || !((p[0] >= 0x80 && p[0] <= 0x8f) ||
                                                        p[0] == 0xde || p[0] == 0xdf))
        return bp_error_set(err, BP_EINVAL, "task %" PRIu64 ": params are not one msgpack map",
                            r->index);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int has_hash = 0;
    uint32_t n = 0;
    if (msgpack_unpack_next(&u, (const char *)p, len, &off) == MSGPACK_UNPACK_SUCCESS) {
        has_hash = bp_mp_get(&u.data, "hash") != NULL;
        n = u.data.via.map.size;
    }
    msgpack_unpacked_destroy(&u);
    if (has_hash) {
        t->params = malloc(len);
        if (!t->params)
            return bp_error_set(err, BP_ENOMEM, "out of memory");
        memcpy(t->params, p, len);
        t->params_len = len;
        return BP_OK;
    }
    size_t hdr = p[0] <= 0x8f ? 1 : p[0] == 0xde ? 3 : 5;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, (size_t)n + 1);
    msgpack_sbuffer_write(&sb, (const char *)p + hdr, len - hdr);
    msgpack_pack_str(&pk, 4);
    msgpack_pack_str_body(&pk, "hash", 4);
    msgpack_pack_str(&pk, strlen(t->hash));
    msgpack_pack_str_body(&pk, t->hash, strlen(t->hash));
    if (!sb.data)
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    t->params = (unsigned char *)sb.data; /* ownership moves to t */
    t->params_len = sb.size;
    return BP_OK;
}

static int ctask_from_req(job *j, const bp_task_req *r, ctask **out, bp_error *err)
{
    *out = NULL;
    ctask *t = calloc(1, sizeof *t);
    if (!t)
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    t->job = j;
    t->index = r->index;
    int rc = BP_OK;
    if (memchr(r->kind, '\0', sizeof r->kind) == NULL || !ident_ok(r->kind))
        rc = bp_error_set(err, BP_EINVAL, "task %" PRIu64 ": invalid kind", r->index);
    else if (memchr(r->hash, '\0', sizeof r->hash) == NULL || !bp_cache_hash_ok(r->hash))
        rc = bp_error_set(err, BP_EINVAL, "task %" PRIu64 ": invalid input hash", r->index);
    else if (r->n_bins > BP_PROTO_MAX_BIN || (r->n_bins && !r->bins))
        rc = bp_error_set(err, BP_EINVAL, "task %" PRIu64 ": too many binary inputs", r->index);
    if (rc == BP_OK) {
        snprintf(t->kind, sizeof t->kind, "%s", r->kind);
        snprintf(t->hash, sizeof t->hash, "%s", r->hash);
        rc = copy_params(t, r, err);
    }
    for (size_t i = 0; rc == BP_OK && i < r->n_bins; i++) {
        const bp_bin_view *b = &r->bins[i];
        char *name = malloc(b->name.len + 1);
        void *data = malloc(b->size ? b->size : 1);
        if (!name || !data) {
            free(name);
            free(data);
            rc = bp_error_set(err, BP_ENOMEM, "out of memory");
            break;
        }
        memcpy(name, b->name.ptr, b->name.len);
        name[b->name.len] = '\0';
        if (b->size)
            memcpy(data, b->data, b->size);
        t->bins[i] = *b;
        t->bins[i].name.ptr = name;
        t->bins[i].data = data;
        t->n_bins = i + 1;
    }
    if (rc != BP_OK) {
        ctask_free(t);
        return rc;
    }
    *out = t;
    return BP_OK;
}

/* ---- jobs -------------------------------------------------------------- */

static job *job_find(bp_coord *c, const char *id)
{
    for (size_t i = 0; i < c->n_jobs; i++)
        if (!strcmp(c->jobs[i]->id, id))
            return c->jobs[i];
    return NULL;
}

static int job_active(const job *j)
{
    return j && (j->state == J_QUEUED || j->state == J_RUNNING);
}

static void job_free(job *j)
{
    if (!j)
        return;
    if (j->drv && j->ops)
        j->ops->destroy(j->drv);
    free(j->spec);
    free(j->result);
    free(j->err_msg);
    free(j);
}

static void journal_rec(bp_coord *c, job *j, bp_jrec_type type, const char *text, int32_t code)
{
    if (!c->journal)
        return;
    bp_jrec r = {type, j->id, text, text ? strlen(text) : 0, code, 0};
    bp_error e;
    if (bp_journal_append(c->journal, &r, &e) != BP_OK)
        clog_(c, "journal: %s", e.msg);
}

/* The job leaves the active states: drop its queue, detach leased tasks
 * (their results will be dropped), free the driver and the spec. */
static void job_end(bp_coord *c, job *j, int state)
{
    if (j->ops && j->drv)
        j->ops->progress(j->drv, &j->done, &j->total);
    j->state = state;
    while (j->qhead)
        task_drop(c, j->qhead);
    size_t pos = 0;
    void *v;
    while (bp__u64map_next(&c->tasks, &pos, NULL, &v))
        if (((ctask *)v)->job == j)
            ((ctask *)v)->job = NULL;
    j->n_leased = 0;
    if (j->drv)
        j->ops->destroy(j->drv);
    j->drv = NULL;
}

static void job_fail(bp_coord *c, job *j, int code, const char *msg)
{
    if (!job_active(j))
        return;
    free(j->err_msg);
    j->err_msg = strdup(msg);
    j->err_code = code ? code : BP_EIO;
    clog_(c, "job %s failed: %s", j->id, msg);
    journal_rec(c, j, BP_JREC_FAILED, msg, bp_proto_wire_code(j->err_code));
    job_end(c, j, J_FAILED);
}

static void job_finish(bp_coord *c, job *j)
{
    bp_error e;
    bp_error_clear(&e);
    char *json = NULL;
    int rc = j->ops->result(j->drv, &json, &e);
    if (rc != BP_OK || !json) {
        free(json);
        job_fail(c, j, rc ? rc : BP_EIO, e.msg[0] ? e.msg : "job driver produced no result");
        return;
    }
    j->result = json;
    journal_rec(c, j, BP_JREC_DONE, json, 0);
    clog_(c, "job %s done", j->id);
    job_end(c, j, J_DONE);
}

/* Feed one result to the driver (from a worker or the cache). */
static int feed(bp_coord *c, job *j, uint64_t index, const msgpack_object *result,
                const bp_bin_view *bins, size_t n_bins)
{
    bp_task_result r = {result, bins, n_bins};
    bp_error e;
    bp_error_clear(&e);
    int rc = j->ops->done(j->drv, index, &r, &e);
    if (rc != BP_OK) {
        job_fail(c, j, rc, e.msg[0] ? e.msg : "job driver rejected a result");
        return rc;
    }
    return BP_OK;
}

/* Ask the driver for more tasks until it has none to give now, the job's
 * queue is full, or it is finished. Tasks whose result is cached are fed
 * back immediately (that is how a restarted coordinator and a repeated job
 * skip finished work). */
static void job_pump(bp_coord *c, job *j)
{
    while (job_active(j)) {
        if (j->ops->finished(j->drv)) {
            job_finish(c, j);
            return;
        }
        if (j->n_queued >= c->o.max_queued_tasks)
            return;
        const bp_task_req *reqs = NULL;
        size_t n = 0;
        bp_error e;
        bp_error_clear(&e);
        int rc = j->ops->next(j->drv, &reqs, &n, &e);
        if (rc != BP_OK) {
            job_fail(c, j, rc, e.msg[0] ? e.msg : "job driver failed");
            return;
        }
        if (n == 0)
            return;
        /* Copy the whole batch first: the driver owns reqs only until the
         * next call into it, and done() is one. */
        ctask **batch = calloc(n, sizeof *batch);
        if (!batch) {
            job_fail(c, j, BP_ENOMEM, "out of memory");
            return;
        }
        for (size_t i = 0; i < n && rc == BP_OK; i++)
            rc = ctask_from_req(j, &reqs[i], &batch[i], &e);
        if (rc != BP_OK) {
            for (size_t i = 0; i < n; i++)
                ctask_free(batch[i]);
            free(batch);
            job_fail(c, j, rc, e.msg);
            return;
        }
        for (size_t i = 0; i < n; i++) {
            ctask *t = batch[i];
            if (!job_active(j)) {
                ctask_free(t);
                continue;
            }
            bp_cache_entry ce;
            memset(&ce, 0, sizeof ce);
            if (c->cache && bp_cache_get(c->cache, t->hash, &ce, &e) == BP_OK) {
                c->st.cache_hits++;
                (void)feed(c, j, t->index, ce.result, ce.bins, ce.n_bins);
                bp_cache_entry_clear(&ce);
                ctask_free(t);
                continue;
            }
            if (e.code == BP_ENOTFOUND && strstr(e.msg, "corrupt"))
                clog_(c, "%s", e.msg);
            t->id = ++c->next_task_id;
            if (bp_lease_task_add(c->leases, t->id) != BP_OK ||
                bp__u64map_put(&c->tasks, t->id, t) != BP_OK) {
                (void)bp_lease_task_remove(c->leases, t->id);
                ctask_free(t);
                job_fail(c, j, BP_ENOMEM, "out of memory");
                continue;
            }
            q_push(j, t, 0);
        }
        free(batch);
    }
}

static int job_add(bp_coord *c, job *j, bp_error *err)
{
    size_t active = 0;
    for (size_t i = 0; i < c->n_jobs; i++)
        active += job_active(c->jobs[i]);
    if (job_active(j) && active >= c->o.max_active_jobs)
        return bp_error_set(err, BP_EUNSUPPORTED,
                            "too many active jobs (%zu, the limit is %u); try again later",
                            active, c->o.max_active_jobs);
    if (c->n_jobs >= c->o.max_jobs) {
        /* evict the oldest finished job */
        size_t k = 0;
        while (k < c->n_jobs && job_active(c->jobs[k]))
            k++;
        if (k == c->n_jobs)
            return bp_error_set(err, BP_EUNSUPPORTED, "too many jobs (limit %u)",
                                c->o.max_jobs);
        job_free(c->jobs[k]);
        memmove(&c->jobs[k], &c->jobs[k + 1], (c->n_jobs - k - 1) * sizeof *c->jobs);
        c->n_jobs--;
        if (c->rr > k)
            c->rr--;
    }
    c->jobs[c->n_jobs++] = j;
    return BP_OK;
}

/* Parse the spec's "kind" and build the driver. */
static int job_create_driver(job *j, bp_error *err)
{
    json_error_t je;
    json_t *root = json_loadb(j->spec, j->spec_len, 0, &je);
    if (!root)
        return bp_error_set(err, BP_EFORMAT, "job spec: invalid JSON at line %d column %d: %s",
                            je.line, je.column, je.text);
    int rc = BP_OK;
    json_t *k = json_is_object(root) ? json_object_get(root, "kind") : NULL;
    if (!json_is_object(root))
        rc = bp_error_set(err, BP_EINVAL, "job spec: not a JSON object");
    else if (!k)
        rc = bp_error_set(err, BP_EINVAL, "job spec: missing field 'kind'");
    else if (!json_is_string(k))
        rc = bp_error_set(err, BP_EINVAL, "job spec: 'kind' must be a string");
    else if (!(j->ops = bp_job_driver_lookup(json_string_value(k))))
        rc = bp_error_set(err, BP_EUNSUPPORTED, "job spec: unknown job kind '%.64s'",
                          json_string_value(k));
    json_decref(root);
    if (rc == BP_OK) {
        bp_error_clear(err);
        rc = j->ops->create(j->spec, j->spec_len, &j->drv, err);
        if (rc != BP_OK && err && !err->msg[0])
            bp_error_set(err, rc, "job spec rejected by the '%s' driver", j->ops->kind);
        if (rc != BP_OK)
            j->drv = NULL;
    }
    return rc;
}

int bp_coord_submit(bp_coord *c, const char *spec, size_t len, char job_id[BP_COORD_JOB_ID_MAX],
                    bp_error *err)
{
    if (!spec || len == 0 || len > BP_PROTO_DEF_MAX_JOB_SPEC_BYTES)
        return bp_error_set(err, BP_EINVAL, "job spec: empty or larger than %zu bytes",
                            (size_t)BP_PROTO_DEF_MAX_JOB_SPEC_BYTES);
    job *j = calloc(1, sizeof *j);
    if (!j || !(j->spec = malloc(len + 1))) {
        free(j);
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    }
    memcpy(j->spec, spec, len);
    j->spec[len] = '\0';
    j->spec_len = len;
    j->state = J_QUEUED;
    int rc = job_create_driver(j, err);
    if (rc == BP_OK) {
        j->seq = c->next_seq;
        snprintf(j->id, sizeof j->id, "j%06" PRIu64, j->seq);
        rc = job_add(c, j, err);
    }
    if (rc != BP_OK) {
        job_free(j);
        return rc;
    }
    c->next_seq++;
    if (c->journal) {
        bp_jrec r = {BP_JREC_SUBMIT, j->id, j->spec, j->spec_len, 0, 0};
        rc = bp_journal_append(c->journal, &r, err);
        if (rc != BP_OK) {
            c->n_jobs--;
            job_free(j);
            return rc;
        }
    }
    clog_(c, "job %s submitted (%s)", j->id, j->ops->kind);
    snprintf(job_id, BP_COORD_JOB_ID_MAX, "%s", j->id);
    job_pump(c, j);
    return BP_OK;
}

int bp_coord_status(bp_coord *c, const char *id, bp_coord_job_info *info, bp_error *err)
{
    job *j = id ? job_find(c, id) : NULL;
    if (!j)
        return bp_error_set(err, BP_ENOTFOUND, "no job '%.40s'", id ? id : "");
    memset(info, 0, sizeof *info);
    snprintf(info->job, sizeof info->job, "%s", j->id);
    snprintf(info->state, sizeof info->state, "%s", job_state_names[j->state]);
    if (j->drv)
        j->ops->progress(j->drv, &j->done, &j->total);
    info->done = j->done;
    info->total = j->total < j->done ? j->done : j->total;
    if (j->state == J_RUNNING && j->done > 0 && j->total >= j->done) {
        double el = (double)(bp__now_ms() - j->started_ms) / 1000.0;
        info->has_eta = 1;
        info->eta_s = el / (double)j->done * (double)(j->total - j->done);
        if (info->eta_s < 0)
            info->eta_s = 0;
    } else if (j->state == J_DONE) {
        info->has_eta = 1;
    }
    if (j->state == J_FAILED || j->state == J_CANCELED) {
        info->error_code = j->err_code ? j->err_code : BP_ECANCELED;
        snprintf(info->error, sizeof info->error, "%s", j->err_msg ? j->err_msg : "canceled");
    }
    return BP_OK;
}

int bp_coord_result(bp_coord *c, const char *id, char **json, bp_error *err)
{
    *json = NULL;
    job *j = id ? job_find(c, id) : NULL;
    if (!j)
        return bp_error_set(err, BP_ENOTFOUND, "no job '%.40s'", id ? id : "");
    if (j->state == J_FAILED || j->state == J_CANCELED)
        return bp_error_set(err, j->err_code ? j->err_code : BP_ECANCELED, "job %s %s: %s", j->id,
                            job_state_names[j->state], j->err_msg ? j->err_msg : "canceled");
    if (j->state != J_DONE)
        return bp_error_set(err, BP_EINVAL, "job %s is %s, not finished", j->id,
                            job_state_names[j->state]);
    *json = strdup(j->result);
    return *json ? BP_OK : bp_error_set(err, BP_ENOMEM, "out of memory");
}

int bp_coord_cancel(bp_coord *c, const char *id, bp_error *err)
{
    job *j = id ? job_find(c, id) : NULL;
    if (!j)
        return bp_error_set(err, BP_ENOTFOUND, "no job '%.40s'", id ? id : "");
    if (!job_active(j))
        return bp_error_set(err, BP_EINVAL, "job %s is already %s", j->id,
                            job_state_names[j->state]);
    free(j->err_msg);
    j->err_msg = strdup("canceled by request");
    j->err_code = BP_ECANCELED;
    journal_rec(c, j, BP_JREC_CANCEL, NULL, 0);
    clog_(c, "job %s canceled", j->id);
    job_end(c, j, J_CANCELED);
    return BP_OK;
}

void bp_coord_get_stats(const bp_coord *c, bp_coord_stats *st)
{
    *st = c->st;
    st->workers = bp_lease_worker_count(c->leases);
}

/* ---- workers ----------------------------------------------------------- */

static uint64_t rid_key(const void *rid, size_t n)
{
    const unsigned char *p = rid;
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h | 1; /* never 0 */
}

static peer *peer_find(bp_coord *c, const bp_frame *env, uint32_t *wid)
{
    peer *p = bp__u64map_get(&c->peer_map, rid_key(env->data, env->size));
    if (!p || p->rid_len != env->size || memcmp(p->rid, env->data, env->size))
        return NULL;
    *wid = (uint32_t)(p - c->peers);
    return p;
}

static void send_to_rid(bp_coord *c, const void *rid, size_t n)
{
    bp_frame env = {rid, n};
    bp_error e;
    (void)bp_proto_send(c->workers, &env, 1, &c->out, &e);
}

static void send_disconnect_rid(bp_coord *c, const void *rid, size_t n)
{
    if (bp_proto_encode_disconnect(&c->out, ++c->msg_id, NULL) == BP_OK)
        send_to_rid(c, rid, n);
}

static void handle_events(bp_coord *c, const bp_lease_event *ev, size_t n);

/* Forget a peer (after the lease table removed or before it removes it). */
static void peer_forget(bp_coord *c, uint32_t wid, int disconnect)
{
    peer *p = &c->peers[wid];
    if (!p->used)
        return;
    if (disconnect)
        send_disconnect_rid(c, p->rid, p->rid_len);
    bp__u64map_del(&c->peer_map, p->key);
    p->used = 0;
}

/* Drop a registered worker: lease lost (counted when crashed), routing id
 * forgotten, told to disconnect. */
static void peer_drop(bp_coord *c, uint32_t wid, int crashed, const char *why)
{
    bp_lease_event ev[4];
    size_t n = 0;
    clog_(c, "worker %s dropped: %s", c->peers[wid].name, why);
    c->st.workers_lost++;
    (void)bp_lease_worker_remove(c->leases, wid, crashed, ev, 4, &n);
    peer_forget(c, wid, 1);
    handle_events(c, ev, n);
}

static void handle_events(bp_coord *c, const bp_lease_event *ev, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const bp_lease_event *e = &ev[i];
        if (e->kind == BP_LEASE_EV_WORKER_DEAD || e->kind == BP_LEASE_EV_WORKER_STALLED) {
            clog_(c, "worker %s %s%s", c->peers[e->worker].name,
                  e->kind == BP_LEASE_EV_WORKER_DEAD ? "is dead (no heartbeat)"
                                                     : "stalled (no progress)",
                  e->task ? "; its task goes back to the queue" : "");
            c->st.workers_lost++;
            peer_forget(c, e->worker, 1);
            continue;
        }
        ctask *t = bp__u64map_get(&c->tasks, e->task);
        if (!t)
            continue;
        if (t->job)
            t->job->n_leased--;
        if (!job_active(t->job)) {
            task_drop(c, t);
            continue;
        }
        if (e->kind == BP_LEASE_EV_REQUEUED) {
            c->st.tasks_requeued++;
            q_push(t->job, t, 1);
        } else {
            c->st.tasks_quarantined++;
            char msg[512];
            snprintf(msg, sizeof msg,
                     "task %" PRIu64 " (%s, %s) quarantined: its worker died or stalled %u "
                     "times",
                     t->index, t->kind, t->hash, e->attempts);
            job *j = t->job;
            task_drop(c, t);
            job_fail(c, j, BP_EIO, msg);
        }
    }
}

/* Lease queued tasks to idle workers, jobs in round robin. */
static ctask *pick_task(bp_coord *c)
{
    for (size_t k = 0; k < c->n_jobs; k++) {
        size_t i = (c->rr + k) % c->n_jobs;
        job *j = c->jobs[i];
        if (!job_active(j))
            continue;
        if (!j->qhead)
            job_pump(c, j);
        if (!job_active(j) || !j->qhead)
            continue;
        ctask *t = j->qhead;
        q_unlink(j, t);
        c->rr = i + 1;
        if (j->state == J_QUEUED) {
            j->state = J_RUNNING;
            j->started_ms = bp__now_ms();
        }
        return t;
    }
    return NULL;
}

static void dispatch(bp_coord *c)
{
    for (uint32_t wid = 0; wid < c->o.max_workers; wid++) {
        if (!c->peers[wid].used || bp_lease_worker_task(c->leases, wid))
            continue;
        ctask *t = pick_task(c);
        if (!t)
            return;
        bp_error e;
        int rc = bp_proto_encode_task(&c->out, ++c->msg_id, t->id, bp_str_c(t->kind), t->params,
                                      t->params_len, (uint64_t)c->o.task_timeout_ms, t->bins,
                                      t->n_bins, &e);
        if (rc != BP_OK) {
            job *j = t->job;
            task_drop(c, t);
            job_fail(c, j, rc, e.msg);
            continue;
        }
        peer *p = &c->peers[wid];
        bp_frame env = {p->rid, p->rid_len};
        if (bp_proto_send(c->workers, &env, 1, &c->out, &e) != BP_OK) {
            q_push(t->job, t, 1);
            peer_drop(c, wid, 0, e.msg);
            continue;
        }
        (void)bp_lease_grant(c->leases, wid, t->id, bp__now_ms());
        t->job->n_leased++;
        c->st.tasks_leased++;
    }
}

static void on_task_result(bp_coord *c, uint32_t wid, const bp_msg *m)
{
    uint64_t tid = m->u.task_result.task;
    ctask *t = bp__u64map_get(&c->tasks, tid);
    if (!t || bp_lease_worker_task(c->leases, wid) != tid) {
        /* not this worker's lease: late (expired) or foreign; drop it */
        c->st.results_dropped++;
        peer_drop(c, wid, 0, "result for a task it does not hold");
        return;
    }
    bp_str h = m->u.task_result.hash;
    if (h.len != strlen(t->hash) || memcmp(h.ptr, t->hash, h.len)) {
        c->st.protocol_errors++;
        peer_drop(c, wid, 0, "result with the wrong input hash");
        return;
    }
    (void)bp_lease_complete(c->leases, wid, tid);
    c->st.results_accepted++;
    job *j = t->job;
    if (j)
        j->n_leased--;
    if (c->cache) {
        msgpack_sbuffer sb;
        msgpack_sbuffer_init(&sb);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        bp_error e;
        if (msgpack_pack_object(&pk, *m->u.task_result.result) != 0 || !sb.data ||
            bp_cache_put(c->cache, t->hash, sb.data, sb.size, m->bin, m->n_bin, &e) != BP_OK)
            clog_(c, "cache: could not store %s", t->hash);
        msgpack_sbuffer_destroy(&sb);
    }
    uint64_t index = t->index;
    task_drop(c, t);
    if (job_active(j) && feed(c, j, index, m->u.task_result.result, m->bin, m->n_bin) == BP_OK)
        job_pump(c, j);
}

static void on_task_failed(bp_coord *c, uint32_t wid, const bp_msg *m)
{
    uint64_t tid = m->u.task_failed.task;
    ctask *t = bp__u64map_get(&c->tasks, tid);
    if (!t || bp_lease_fail(c->leases, wid, tid) != BP_OK) {
        c->st.results_dropped++;
        peer_drop(c, wid, 0, "failure report for a task it does not hold");
        return;
    }
    job *j = t->job;
    if (j)
        j->n_leased--;
    char msg[BP_ERROR_MSG_MAX];
    int ml = m->u.task_failed.message.len > 800 ? 800 : (int)m->u.task_failed.message.len;
    snprintf(msg, sizeof msg, "task %" PRIu64 " (%s) failed: %.*s", t->index, t->kind, ml,
             m->u.task_failed.message.ptr ? m->u.task_failed.message.ptr : "");
    task_drop(c, t);
    /* A task that returns an error fails deterministically: no retry. */
    job_fail(c, j, bp_proto_bp_code(m->u.task_failed.code), msg);
}

/* A peer's routing id can be reused by another connection once the
 * peer's own has dropped; only the connection's CURVE key (ZAP User-Id)
 * says who really sent a message. A message under a peer's routing id but
 * from another key is dropped without touching the peer, so an impostor can
 * neither act for it nor get it evicted. */
static int same_sender(bp_coord *c, peer *p)
{
    if (!strcmp(p->user_id, c->in.user_id))
        return 1;
    c->st.identity_mismatches++;
    if (!p->mismatch_logged) {
        p->mismatch_logged = 1;
        clog_(c, "worker %s: message from a different CURVE key dropped", p->name);
    }
    return 0;
}

static void handle_worker_msg(bp_coord *c)
{
    bp_error e;
    int rc = bp_proto_recv(c->workers, 1, &c->worker_lim, ZMQ_DONTWAIT, &c->in, &e);
    if (rc == BP_ETIMEOUT)
        return;
    uint32_t wid = 0;
    int64_t now = bp__now_ms();
    const bp_frame *env = c->in.n_envelope ? &c->in.envelope[0] : NULL;
    peer *p = env ? peer_find(c, env, &wid) : NULL;
    /* Before anything the message could trigger (even the drop of an
     * invalid message): a routing id is only a name the sender chose. */
    if (p && !same_sender(c, p))
        goto out;
    if (rc == BP_OK)
        rc = bp_proto_decode(c->in.body, c->in.n_body, &c->worker_lim, &c->msg, &e);
    if (rc != BP_OK) {
        /* invalid message: drop it and treat the peer as invalid */
        c->st.protocol_errors++;
        if (p)
            peer_drop(c, wid, 0, e.msg);
        else if (env)
            send_disconnect_rid(c, env->data, env->size);
        goto out;
    }
    if (!p) {
        if (c->msg.type != BP_MSG_READY) {
            /* e.g. a worker of a previous coordinator run: make it register */
            if (c->msg.type != BP_MSG_DISCONNECT)
                send_disconnect_rid(c, env->data, env->size);
            goto out;
        }
        if (bp_lease_worker_add(c->leases, now, &wid) != BP_OK) {
            clog_(c, "worker refused: %u workers connected", c->o.max_workers);
            send_disconnect_rid(c, env->data, env->size);
            goto out;
        }
        p = &c->peers[wid];
        memset(p, 0, sizeof *p);
        p->used = 1;
        memcpy(p->rid, env->data, env->size);
        p->rid_len = env->size;
        p->key = rid_key(env->data, env->size);
        memcpy(p->user_id, c->in.user_id, sizeof p->user_id);
        int nl = c->msg.u.ready.worker.len > 60 ? 60 : (int)c->msg.u.ready.worker.len;
        snprintf(p->name, sizeof p->name, "%.*s", nl, c->msg.u.ready.worker.ptr);
        for (char *s = p->name; *s; s++)
            if ((unsigned char)*s < 0x20 || *s == 0x7f)
                *s = '?';
        if (bp__u64map_get(&c->peer_map, p->key) || bp__u64map_put(&c->peer_map, p->key, p)) {
            /* identity key collision (or OOM): refuse rather than confuse */
            bp_lease_event ev[2];
            size_t n = 0;
            (void)bp_lease_worker_remove(c->leases, wid, 0, ev, 2, &n);
            p->used = 0;
            send_disconnect_rid(c, env->data, env->size);
            goto out;
        }
        c->st.workers_joined++;
        clog_(c, "worker %s joined (%" PRIu64 " threads)", p->name, c->msg.u.ready.threads);
        if (bp_proto_encode_welcome(&c->out, ++c->msg_id, (uint64_t)c->o.heartbeat_ms,
                                    c->o.liveness, &e) == BP_OK)
            send_to_rid(c, p->rid, p->rid_len);
        goto out;
    }
    switch (c->msg.type) {
    case BP_MSG_HEARTBEAT:
        (void)bp_lease_worker_seen(c->leases, wid, now, &c->msg.u.heartbeat.progress);
        break;
    case BP_MSG_TASK_RESULT:
        (void)bp_lease_worker_seen(c->leases, wid, now, NULL);
        on_task_result(c, wid, &c->msg);
        break;
    case BP_MSG_TASK_FAILED:
        (void)bp_lease_worker_seen(c->leases, wid, now, NULL);
        on_task_failed(c, wid, &c->msg);
        break;
    case BP_MSG_DISCONNECT: {
        bp_lease_event ev[4];
        size_t n = 0;
        clog_(c, "worker %s left", p->name);
        (void)bp_lease_worker_remove(c->leases, wid, 0, ev, 4, &n);
        peer_forget(c, wid, 0);
        handle_events(c, ev, n);
        break;
    }
    default: /* a second ready: valid but unexpected */
        peer_drop(c, wid, 0, "unexpected message");
        break;
    }
out:
    bp_msg_clear(&c->msg);
    bp_proto_in_clear(&c->in);
}

/* ---- clients ----------------------------------------------------------- */

static void reply(bp_coord *c, const bp_frame *env)
{
    bp_error e;
    (void)bp_proto_send(c->client, env, 1, &c->out, &e);
}

static void reply_error(bp_coord *c, const bp_frame *env, uint64_t id, int code, const char *msg)
{
    bp_error e;
    if (bp_proto_encode_error(&c->out, id, bp_proto_wire_code(code ? code : BP_EIO),
                              bp_str_c(msg), &e) == BP_OK)
        reply(c, env);
}

/* A job id from the wire as a C string; 0 if it cannot be one of ours. */
static int job_arg(bp_str s, char *out)
{
    if (s.len == 0 || s.len >= BP_COORD_JOB_ID_MAX)
        return 0;
    memcpy(out, s.ptr, s.len);
    out[s.len] = '\0';
    return 1;
}

static void handle_client_msg(bp_coord *c)
{
    bp_error e;
    bp_error_clear(&e);
    int rc = bp_proto_recv(c->client, 1, &c->client_lim, ZMQ_DONTWAIT, &c->in, &e);
    if (rc == BP_ETIMEOUT)
        return;
    const bp_frame *env = c->in.n_envelope ? &c->in.envelope[0] : NULL;
    if (rc == BP_OK)
        rc = bp_proto_decode(c->in.body, c->in.n_body, &c->client_lim, &c->msg, &e);
    if (rc != BP_OK) {
        c->st.protocol_errors++;
        if (env)
            reply_error(c, env, c->msg.has_id ? c->msg.id : 0, rc, e.msg);
        goto out;
    }
    uint64_t id = c->msg.id;
    char jid[BP_COORD_JOB_ID_MAX];
    switch (c->msg.type) {
    case BP_MSG_SUBMIT: {
        char newid[BP_COORD_JOB_ID_MAX];
        rc = bp_coord_submit(c, c->msg.u.submit.job.ptr, c->msg.u.submit.job.len, newid, &e);
        if (rc == BP_OK)
            rc = bp_proto_encode_submitted(&c->out, id, bp_str_c(newid), &e);
        if (rc == BP_OK)
            reply(c, env);
        break;
    }
    case BP_MSG_STATUS: {
        bp_coord_job_info info;
        rc = job_arg(c->msg.u.status.job, jid)
                 ? bp_coord_status(c, jid, &info, &e)
                 : bp_error_set(&e, BP_ENOTFOUND, "no such job");
        if (rc == BP_OK) {
            bp_msg_status_reply st;
            memset(&st, 0, sizeof st);
            st.job = bp_str_c(info.job);
            st.state = bp_str_c(info.state);
            st.done = info.done;
            st.total = info.total;
            st.progress = info.total ? (double)info.done / (double)info.total
                                     : (!strcmp(info.state, "done") ? 1.0 : 0.0);
            st.has_eta = info.has_eta != 0;
            st.eta_s = info.eta_s;
            if (info.error_code) {
                st.has_error_code = true;
                st.error_code = bp_proto_wire_code(info.error_code);
                st.error = bp_str_c(info.error);
            }
            rc = bp_proto_encode_status_reply(&c->out, id, &st, &e);
        }
        if (rc == BP_OK)
            reply(c, env);
        break;
    }
    case BP_MSG_RESULT: {
        char *json = NULL;
        rc = job_arg(c->msg.u.result.job, jid) ? bp_coord_result(c, jid, &json, &e)
                                               : bp_error_set(&e, BP_ENOTFOUND, "no such job");
        if (rc == BP_OK)
            rc = bp_proto_encode_result_reply(&c->out, id, bp_str_c(jid), bp_str_c(json), &e);
        free(json);
        if (rc == BP_OK)
            reply(c, env);
        break;
    }
    case BP_MSG_CANCEL:
        rc = job_arg(c->msg.u.cancel.job, jid) ? bp_coord_cancel(c, jid, &e)
                                               : bp_error_set(&e, BP_ENOTFOUND, "no such job");
        if (rc == BP_OK)
            rc = bp_proto_encode_ok(&c->out, id, &e);
        if (rc == BP_OK)
            reply(c, env);
        break;
    case BP_MSG_JOBS: {
        bp_proto_job_entry *ents = calloc(c->n_jobs ? c->n_jobs : 1, sizeof *ents);
        if (!ents) {
            rc = bp_error_set(&e, BP_ENOMEM, "out of memory");
            break;
        }
        for (size_t i = 0; i < c->n_jobs; i++) {
            job *j = c->jobs[i];
            if (j->drv)
                j->ops->progress(j->drv, &j->done, &j->total);
            ents[i].job = bp_str_c(j->id);
            ents[i].state = bp_str_c(job_state_names[j->state]);
            ents[i].done = j->done;
            ents[i].total = j->total < j->done ? j->done : j->total;
        }
        rc = bp_proto_encode_jobs_reply(&c->out, id, ents, c->n_jobs, &e);
        free(ents);
        if (rc == BP_OK)
            reply(c, env);
        break;
    }
    default:
        rc = bp_error_set(&e, BP_EPROTO, "unexpected message type");
        break;
    }
    if (rc != BP_OK)
        reply_error(c, env, id, rc, e.msg);
out:
    bp_msg_clear(&c->msg);
    bp_proto_in_clear(&c->in);
}

/* ---- set-up ------------------------------------------------------------ */

static int setopt_int(void *s, int opt, int v)
{
    return zmq_setsockopt(s, opt, &v, sizeof v);
}

static int make_router(bp_coord *c, const char *ep, const bp_proto_limits *lim, int hwm,
                       const char *domain, void **out, bp_error *err)
{
    void *s = zmq_socket(c->zctx, ZMQ_ROUTER);
    if (!s)
        return bp_error_set(err, BP_EIO, "socket: %s", zmq_strerror(zmq_errno()));
    int bad = bp_proto_socket_limits(s, lim, err) != BP_OK;
    bad = bad || setopt_int(s, ZMQ_ROUTER_MANDATORY, 1);
    bad = bad || setopt_int(s, ZMQ_ROUTER_HANDOVER, 0);
    bad = bad || setopt_int(s, ZMQ_SNDHWM, hwm) || setopt_int(s, ZMQ_RCVHWM, hwm);
    bad = bad || setopt_int(s, ZMQ_HEARTBEAT_IVL, 1000);
    bad = bad || setopt_int(s, ZMQ_HEARTBEAT_TIMEOUT, 3000);
    bad = bad || setopt_int(s, ZMQ_HEARTBEAT_TTL, 3000);
    bad = bad || setopt_int(s, ZMQ_HANDSHAKE_IVL, 5000);
    bad = bad || setopt_int(s, ZMQ_TCP_KEEPALIVE, 1);
    if (!bad && c->o.curve_secret_key) {
        bad = setopt_int(s, ZMQ_CURVE_SERVER, 1) ||
              zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, c->o.curve_secret_key, 40) ||
              zmq_setsockopt(s, ZMQ_ZAP_DOMAIN, domain, strlen(domain));
    }
    if (bad || zmq_bind(s, ep) != 0) {
        int e = zmq_errno();
        zmq_close(s);
        return bp_error_set(err, BP_EIO, "cannot bind %s: %s", ep, zmq_strerror(e));
    }
    *out = s;
    return BP_OK;
}

static int replay_cb(void *ud, const bp_jrec *r, bp_error *err)
{
    bp_coord *c = ud;
    job *j = job_find(c, r->job);
    if (r->type == BP_JREC_SUBMIT) {
        if (j)
            return BP_OK; /* duplicate record: keep the first */
        j = calloc(1, sizeof *j);
        if (!j || !(j->spec = malloc(r->text_len + 1))) {
            free(j);
            return bp_error_set(err, BP_ENOMEM, "out of memory");
        }
        memcpy(j->spec, r->text, r->text_len);
        j->spec[r->text_len] = '\0';
        j->spec_len = r->text_len;
        j->state = J_QUEUED;
        snprintf(j->id, sizeof j->id, "%s", r->job);
        if (j->id[0] == 'j')
            j->seq = strtoull(j->id + 1, NULL, 10);
        if (j->seq >= c->next_seq)
            c->next_seq = j->seq + 1;
        if (c->n_jobs >= c->o.max_jobs) {
            /* replay keeps the newest: evict the oldest finished one */
            size_t k = 0;
            while (k < c->n_jobs && job_active(c->jobs[k]))
                k++;
            if (k == c->n_jobs) {
                job_free(j);
                return BP_OK;
            }
            job_free(c->jobs[k]);
            memmove(&c->jobs[k], &c->jobs[k + 1], (c->n_jobs - k - 1) * sizeof *c->jobs);
            c->n_jobs--;
        }
        c->jobs[c->n_jobs++] = j;
        return BP_OK;
    }
    if (!job_active(j))
        return BP_OK;
    if (r->type == BP_JREC_DONE) {
        j->result = malloc(r->text_len + 1);
        if (!j->result)
            return bp_error_set(err, BP_ENOMEM, "out of memory");
        memcpy(j->result, r->text, r->text_len + 1);
        j->state = J_DONE;
    } else {
        j->err_msg = strdup(r->type == BP_JREC_CANCEL ? "canceled by request" : r->text);
        j->err_code = r->type == BP_JREC_CANCEL ? BP_ECANCELED : bp_proto_bp_code(r->code);
        j->state = r->type == BP_JREC_CANCEL ? J_CANCELED : J_FAILED;
    }
    return BP_OK;
}

/* Rewrite the journal with just the jobs kept in memory. */
static int compact_journal(bp_coord *c, bp_error *err)
{
    bp_jrec *recs = calloc(2 * c->n_jobs + 1, sizeof *recs);
    if (!recs)
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < c->n_jobs; i++) {
        job *j = c->jobs[i];
        recs[n++] = (bp_jrec){BP_JREC_SUBMIT, j->id, j->spec, j->spec_len, 0, 0};
        if (j->state == J_DONE)
            recs[n++] = (bp_jrec){BP_JREC_DONE, j->id, j->result, strlen(j->result), 0, 0};
        else if (j->state == J_CANCELED)
            recs[n++] = (bp_jrec){BP_JREC_CANCEL, j->id, NULL, 0, 0, 0};
        else if (j->state == J_FAILED)
            recs[n++] = (bp_jrec){BP_JREC_FAILED, j->id, j->err_msg, strlen(j->err_msg),
                                  bp_proto_wire_code(j->err_code), 0};
    }
    int rc = bp_journal_rewrite(c->journal, recs, n, err);
    free(recs);
    return rc;
}

static int open_state(bp_coord *c, bp_error *err)
{
    if (strlen(c->o.state_dir) + 32 >= sizeof c->state_dir)
        return bp_error_set(err, BP_EINVAL, "state directory path too long");
    snprintf(c->state_dir, sizeof c->state_dir, "%s", c->o.state_dir);
    if (mkdir(c->state_dir, 0700) != 0 && errno != EEXIST)
        return bp_error_set(err, BP_EIO, "%s: %s", c->state_dir, strerror(errno));
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/cache", c->state_dir);
    int rc = bp_cache_open(path, &c->cache, err);
    if (rc != BP_OK)
        return rc;
    snprintf(path, sizeof path, "%s/journal", c->state_dir);
    bp_journal_replay_info info;
    rc = bp_journal_open(path, replay_cb, c, &c->journal, &info, err);
    if (rc != BP_OK)
        return rc;
    if (info.torn_bytes)
        clog_(c, "journal: ignored a torn last record (%" PRIu64 " bytes)", info.torn_bytes);
    /* Rebuild unfinished jobs; a spec the driver now rejects fails its job. */
    size_t resumed = 0;
    for (size_t i = 0; i < c->n_jobs; i++) {
        job *j = c->jobs[i];
        if (!job_active(j))
            continue;
        bp_error e;
        bp_error_clear(&e);
        if (job_create_driver(j, &e) != BP_OK) {
            j->err_msg = strdup(e.msg);
            j->err_code = e.code ? e.code : BP_EINVAL;
            j->state = J_FAILED;
            continue;
        }
        resumed++;
    }
    rc = compact_journal(c, err);
    if (rc != BP_OK)
        return rc;
    if (info.records)
        clog_(c, "journal: %zu records replayed, %zu jobs kept, %zu resumed", info.records,
              c->n_jobs, resumed);
    for (size_t i = 0; i < c->n_jobs; i++)
        if (job_active(c->jobs[i]))
            job_pump(c, c->jobs[i]);
    return BP_OK;
}

int bp_coord_new(const bp_coord_opts *opts, bp_coord **out, bp_error *err)
{
    *out = NULL;
    if (!opts || !opts->worker_bind)
        return bp_error_set(err, BP_EINVAL, "coordinator: no worker endpoint");
    if (!!opts->curve_secret_key != !!opts->allow_keys_file ||
        (opts->curve_secret_key && strlen(opts->curve_secret_key) != 40))
        return bp_error_set(err, BP_EINVAL,
                            "coordinator: CURVE needs a secret key (40 Z85 characters) and an "
                            "allow-list file");
    (void)bp_runtime_register_kinds();
    bp_coord *c = calloc(1, sizeof *c);
    if (!c)
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    bp_coord_opts d;
    bp_coord_opts_default(&d);
    c->o = *opts;
#define DEF(f) if (!c->o.f) c->o.f = d.f
    DEF(heartbeat_ms);
    DEF(liveness);
    DEF(stall_ms);
    DEF(max_attempts);
    DEF(max_workers);
    DEF(max_jobs);
    DEF(max_active_jobs);
    DEF(max_queued_tasks);
#undef DEF
    c->next_seq = 1;
    bp__u64map_init(&c->peer_map);
    bp__u64map_init(&c->tasks);
    bp_proto_in_init(&c->in);
    bp_msg_init(&c->msg);
    bp_proto_out_init(&c->out, NULL);
    bp_proto_limits_default(&c->client_lim);
    c->client_lim.accept = BP_PROTO_FROM_CLIENT;
    c->client_lim.max_header_bytes = CLIENT_MAX_HEADER;
    c->client_lim.max_frame_bytes = 4096;
    c->client_lim.max_bin_frames = 1;
    bp_proto_limits_default(&c->worker_lim);
    c->worker_lim.accept = BP_PROTO_FROM_WORKER;
    int rc = BP_OK;
    bp_lease_cfg lc = {c->o.heartbeat_ms, c->o.liveness, c->o.stall_ms, c->o.task_timeout_ms,
                       c->o.max_attempts, c->o.max_workers};
    c->peers = calloc(c->o.max_workers, sizeof *c->peers);
    c->jobs = calloc(c->o.max_jobs, sizeof *c->jobs);
    if (!c->peers || !c->jobs || bp_lease_table_new(&lc, &c->leases) != BP_OK) {
        rc = bp_error_set(err, BP_ENOMEM, "out of memory");
        goto fail;
    }
    if (c->o.state_dir && (rc = open_state(c, err)) != BP_OK)
        goto fail;
    c->zctx = zmq_ctx_new();
    if (!c->zctx) {
        rc = bp_error_set(err, BP_EIO, "zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    zmq_ctx_set(c->zctx, ZMQ_BLOCKY, 0);
    zmq_ctx_set(c->zctx, ZMQ_MAX_SOCKETS, (int)c->o.max_workers + 64);
    /* RFC 27: the handler must exist before any CURVE socket is bound. */
    if (c->o.curve_secret_key && (rc = bp__zap_open(c->zctx, c->o.allow_keys_file, &c->zap,
                                                    err)) != BP_OK)
        goto fail;
    rc = make_router(c, c->o.worker_bind, &c->worker_lim, 10000, "bitplan-workers", &c->workers,
                     err);
    if (rc == BP_OK && c->o.client_bind)
        rc = make_router(c, c->o.client_bind, &c->client_lim, 1000, "bitplan-clients",
                         &c->client, err);
    if (rc != BP_OK)
        goto fail;
    c->last_tick = bp__now_ms();
    clog_(c, "listening: workers %s%s%s%s", c->o.worker_bind,
          c->o.client_bind ? ", clients " : "", c->o.client_bind ? c->o.client_bind : "",
          c->zap ? " (CURVE)" : "");
    *out = c;
    return BP_OK;
fail:
    bp_coord_destroy(&c);
    return rc;
}

static void tick(bp_coord *c)
{
    int64_t now = bp__now_ms();
    bp_lease_event ev[MAX_EVENTS];
    size_t n;
    do {
        n = 0;
        bp_lease_tick(c->leases, now, ev, MAX_EVENTS, &n);
        handle_events(c, ev, n);
    } while (n >= MAX_EVENTS - 1);
    c->last_tick = now;
}

int bp_coord_poll(bp_coord *c, int timeout_ms, bp_error *err)
{
    zmq_pollitem_t items[3];
    int n = 0, iw = -1, ic = -1, iz = -1;
    items[n] = (zmq_pollitem_t){c->workers, 0, ZMQ_POLLIN, 0};
    iw = n++;
    if (c->client) {
        items[n] = (zmq_pollitem_t){c->client, 0, ZMQ_POLLIN, 0};
        ic = n++;
    }
    if (c->zap) {
        items[n] = (zmq_pollitem_t){bp__zap_socket(c->zap), 0, ZMQ_POLLIN, 0};
        iz = n++;
    }
    /* Leases are checked at least 4 times per heartbeat interval. */
    int64_t tick_every = c->o.heartbeat_ms / 4 > 0 ? c->o.heartbeat_ms / 4 : 1;
    int64_t until_tick = c->last_tick + tick_every - bp__now_ms();
    if (until_tick < 0)
        until_tick = 0;
    if (timeout_ms < 0 || timeout_ms > until_tick)
        timeout_ms = (int)until_tick;
    int rc = zmq_poll(items, n, timeout_ms);
    if (rc < 0) {
        if (zmq_errno() == EINTR)
            return BP_OK;
        return bp_error_set(err, BP_EIO, "zmq_poll: %s", zmq_strerror(zmq_errno()));
    }
    /* Bounded batches per socket so one busy peer cannot starve the rest. */
    if (iz >= 0 && (items[iz].revents & ZMQ_POLLIN)) {
        char user[48];
        for (int k = 0; k < 64; k++) {
            int r = bp__zap_handle(c->zap, user, sizeof user);
            if (r < 0)
                break;
            if (r == 0)
                clog_(c, "CURVE: refused a connection with a key not on the allow-list");
        }
    }
    if (items[iw].revents & ZMQ_POLLIN)
        for (int k = 0; k < 256; k++) {
            int ev = 0;
            size_t sz = sizeof ev;
            if (zmq_getsockopt(c->workers, ZMQ_EVENTS, &ev, &sz) != 0 || !(ev & ZMQ_POLLIN))
                break;
            handle_worker_msg(c);
        }
    if (ic >= 0 && (items[ic].revents & ZMQ_POLLIN))
        for (int k = 0; k < 64; k++) {
            int ev = 0;
            size_t sz = sizeof ev;
            if (zmq_getsockopt(c->client, ZMQ_EVENTS, &ev, &sz) != 0 || !(ev & ZMQ_POLLIN))
                break;
            handle_client_msg(c);
        }
    if (bp__now_ms() - c->last_tick >= tick_every)
        tick(c);
    dispatch(c);
    return BP_OK;
}

int bp_coord_run(bp_coord *c, volatile sig_atomic_t *stop, bp_error *err)
{
    while (!stop || !*stop) {
        int rc = bp_coord_poll(c, 1000, err);
        if (rc != BP_OK)
            return rc;
    }
    return BP_OK;
}

void bp_coord_destroy(bp_coord **p)
{
    if (!p || !*p)
        return;
    bp_coord *c = *p;
    if (c->workers)
        zmq_close(c->workers);
    if (c->client)
        zmq_close(c->client);
    bp__zap_close(&c->zap);
    if (c->zctx)
        zmq_ctx_term(c->zctx);
    for (size_t i = 0; i < c->n_jobs; i++)
        job_free(c->jobs[i]);
    free(c->jobs);
    size_t pos = 0;
    void *v;
    while (bp__u64map_next(&c->tasks, &pos, NULL, &v))
        ctask_free(v);
    bp__u64map_free(&c->tasks);
    bp__u64map_free(&c->peer_map);
    free(c->peers);
    bp_lease_table_destroy(&c->leases);
    bp_journal_close(&c->journal);
    bp_cache_close(&c->cache);
    bp_msg_clear(&c->msg);
    bp_proto_in_clear(&c->in);
    bp_proto_out_clear(&c->out);
    free(c);
    *p = NULL;
}
