/* bitplan coord: the lease table (see include/bitplan/lease.h). */
#include "bitplan/lease.h"

#include <stdlib.h>
#include <string.h>

#include "coord_internal.h"

typedef struct ltask {
    uint64_t id;
    bp_lease_state state;
    uint32_t worker;      /* holder while leased */
    uint32_t attempts;    /* leases lost to deaths and stalls */
    int64_t deadline;     /* ms; 0 = none */
} ltask;

typedef struct lworker {
    int used;
    int64_t last_seen;    /* ms */
    uint64_t progress;    /* last counter value reported */
    int64_t progress_at;  /* ms when the counter last changed (or lease start) */
    uint64_t task;        /* 0 = idle */
} lworker;

struct bp_lease_table {
    bp_lease_cfg cfg;
    bp__u64map tasks;     /* id -> ltask* */
    lworker *workers;     /* [cfg.max_workers] */
    uint32_t *free_ids;   /* stack of unused worker slots */
    uint32_t n_free;
    size_t n_workers;
};

void bp_lease_cfg_default(bp_lease_cfg *cfg)
{
    cfg->heartbeat_ms = 1000;
    cfg->liveness = 3;
    cfg->stall_ms = 60000;
    cfg->task_timeout_ms = 0;
    cfg->max_attempts = 3;
    cfg->max_workers = 4096;
}

int bp_lease_table_new(const bp_lease_cfg *cfg, bp_lease_table **out)
{
    *out = NULL;
    bp_lease_cfg d;
    bp_lease_cfg_default(&d);
    bp_lease_table *t = calloc(1, sizeof *t);
    if (!t)
        return BP_ENOMEM;
    t->cfg = d;
    if (cfg) {
        if (cfg->heartbeat_ms > 0)
            t->cfg.heartbeat_ms = cfg->heartbeat_ms;
        if (cfg->liveness)
            t->cfg.liveness = cfg->liveness;
        if (cfg->stall_ms > 0)
            t->cfg.stall_ms = cfg->stall_ms;
        if (cfg->task_timeout_ms > 0)
            t->cfg.task_timeout_ms = cfg->task_timeout_ms;
        if (cfg->max_attempts)
            t->cfg.max_attempts = cfg->max_attempts;
        if (cfg->max_workers)
            t->cfg.max_workers = cfg->max_workers;
    }
    bp__u64map_init(&t->tasks);
    t->workers = calloc(t->cfg.max_workers, sizeof *t->workers);
    t->free_ids = malloc(t->cfg.max_workers * sizeof *t->free_ids);
    if (!t->workers || !t->free_ids) {
        bp_lease_table_destroy(&t);
        return BP_ENOMEM;
    }
    /* Pop order 0, 1, 2, ...: handles are small and stable in logs. */
    for (uint32_t i = 0; i < t->cfg.max_workers; i++)
        t->free_ids[i] = t->cfg.max_workers - 1 - i;
    t->n_free = t->cfg.max_workers;
    *out = t;
    return BP_OK;
}

void bp_lease_table_destroy(bp_lease_table **p)
{
    if (!p || !*p)
        return;
    bp_lease_table *t = *p;
    size_t pos = 0;
    void *v;
    while (bp__u64map_next(&t->tasks, &pos, NULL, &v))
        free(v);
    bp__u64map_free(&t->tasks);
    free(t->workers);
    free(t->free_ids);
    free(t);
    *p = NULL;
}

const bp_lease_cfg *bp_lease_table_cfg(const bp_lease_table *t)
{
    return &t->cfg;
}

int bp_lease_task_add(bp_lease_table *t, uint64_t id)
{
    if (!id || bp__u64map_get(&t->tasks, id))
        return BP_EINVAL;
    ltask *k = calloc(1, sizeof *k);
    if (!k)
        return BP_ENOMEM;
    k->id = id;
    k->state = BP_LEASE_QUEUED;
    if (bp__u64map_put(&t->tasks, id, k)) {
        free(k);
        return BP_ENOMEM;
    }
    return BP_OK;
}

int bp_lease_task_remove(bp_lease_table *t, uint64_t id)
{
    ltask *k = bp__u64map_get(&t->tasks, id);
    if (!k)
        return BP_ENOTFOUND;
    if (k->state == BP_LEASE_LEASED)
        return BP_EINVAL;
    bp__u64map_del(&t->tasks, id);
    free(k);
    return BP_OK;
}

bp_lease_state bp_lease_task_state(const bp_lease_table *t, uint64_t id, uint32_t *attempts,
                                   uint32_t *worker)
{
    const ltask *k = bp__u64map_get(&t->tasks, id);
    if (attempts)
        *attempts = k ? k->attempts : 0;
    if (worker)
        *worker = k ? k->worker : 0;
    return k ? k->state : BP_LEASE_NONE;
}

size_t bp_lease_task_count(const bp_lease_table *t, bp_lease_state state)
{
    size_t pos = 0, n = 0;
    void *v;
    while (bp__u64map_next(&t->tasks, &pos, NULL, &v))
        n += ((ltask *)v)->state == state;
    return n;
}

static lworker *worker_get(const bp_lease_table *t, uint32_t wid)
{
    if (wid >= t->cfg.max_workers || !t->workers[wid].used)
        return NULL;
    return &t->workers[wid];
}

int bp_lease_worker_add(bp_lease_table *t, int64_t now, uint32_t *wid)
{
    if (!t->n_free)
        return BP_ENOMEM;
    uint32_t id = t->free_ids[--t->n_free];
    lworker *w = &t->workers[id];
    memset(w, 0, sizeof *w);
    w->used = 1;
    w->last_seen = now;
    w->progress_at = now;
    t->n_workers++;
    *wid = id;
    return BP_OK;
}

int bp_lease_worker_seen(bp_lease_table *t, uint32_t wid, int64_t now, const uint64_t *progress)
{
    lworker *w = worker_get(t, wid);
    if (!w)
        return BP_ENOTFOUND;
    w->last_seen = now;
    if (progress && *progress != w->progress) {
        w->progress = *progress;
        w->progress_at = now;
    }
    return BP_OK;
}

uint64_t bp_lease_worker_task(const bp_lease_table *t, uint32_t wid)
{
    const lworker *w = worker_get(t, wid);
    return w ? w->task : 0;
}

int bp_lease_worker_exists(const bp_lease_table *t, uint32_t wid)
{
    return worker_get(t, wid) != NULL;
}

size_t bp_lease_worker_count(const bp_lease_table *t)
{
    return t->n_workers;
}

static void push(bp_lease_event *ev, size_t cap, size_t *n, bp_lease_event_kind kind,
                 uint32_t worker, uint64_t task, uint32_t attempts)
{
    if (*n < cap)
        ev[(*n)++] = (bp_lease_event){kind, worker, task, attempts};
}

/* The lease on task k is lost; requeue or quarantine it. */
static void lose_lease(bp_lease_table *t, ltask *k, int count_attempt, bp_lease_event *ev,
                       size_t cap, size_t *n)
{
    uint32_t holder = k->worker;
    if (count_attempt)
        k->attempts++;
    k->worker = 0;
    k->deadline = 0;
    if (count_attempt && k->attempts >= t->cfg.max_attempts) {
        k->state = BP_LEASE_QUARANTINED;
        push(ev, cap, n, BP_LEASE_EV_QUARANTINED, holder, k->id, k->attempts);
    } else {
        k->state = BP_LEASE_QUEUED;
        push(ev, cap, n, BP_LEASE_EV_REQUEUED, holder, k->id, k->attempts);
    }
}

static void free_worker(bp_lease_table *t, uint32_t wid)
{
    t->workers[wid].used = 0;
    t->free_ids[t->n_free++] = wid;
    t->n_workers--;
}

int bp_lease_worker_remove(bp_lease_table *t, uint32_t wid, int count_attempt,
                           bp_lease_event *ev, size_t cap, size_t *n)
{
    lworker *w = worker_get(t, wid);
    if (!w)
        return BP_ENOTFOUND;
    ltask *k = w->task ? bp__u64map_get(&t->tasks, w->task) : NULL;
    if (k && k->state == BP_LEASE_LEASED && k->worker == wid)
        lose_lease(t, k, count_attempt, ev, cap, n);
    free_worker(t, wid);
    return BP_OK;
}

int bp_lease_grant(bp_lease_table *t, uint32_t wid, uint64_t task, int64_t now)
{
    lworker *w = worker_get(t, wid);
    ltask *k = bp__u64map_get(&t->tasks, task);
    if (!w || !k)
        return BP_ENOTFOUND;
    if (w->task || k->state != BP_LEASE_QUEUED)
        return BP_EINVAL;
    k->state = BP_LEASE_LEASED;
    k->worker = wid;
    k->deadline = t->cfg.task_timeout_ms > 0 ? now + t->cfg.task_timeout_ms : 0;
    w->task = task;
    w->progress_at = now; /* the stall window starts with the lease */
    return BP_OK;
}

static int finish(bp_lease_table *t, uint32_t wid, uint64_t task, bp_lease_state to)
{
    lworker *w = worker_get(t, wid);
    ltask *k = bp__u64map_get(&t->tasks, task);
    if (!w || !k || k->state != BP_LEASE_LEASED || k->worker != wid || w->task != task)
        return BP_ENOTFOUND;
    k->state = to;
    k->worker = 0;
    w->task = 0;
    return BP_OK;
}

int bp_lease_complete(bp_lease_table *t, uint32_t wid, uint64_t task)
{
    return finish(t, wid, task, BP_LEASE_DONE);
}

int bp_lease_fail(bp_lease_table *t, uint32_t wid, uint64_t task)
{
    return finish(t, wid, task, BP_LEASE_FAILED);
}

void bp_lease_tick(bp_lease_table *t, int64_t now, bp_lease_event *ev, size_t cap, size_t *n)
{
    const int64_t dead_after = t->cfg.heartbeat_ms * (int64_t)t->cfg.liveness;
    for (uint32_t wid = 0; wid < t->cfg.max_workers; wid++) {
        if (*n + 2 > cap)
            return;
        lworker *w = &t->workers[wid];
        if (!w->used)
            continue;
        ltask *k = w->task ? bp__u64map_get(&t->tasks, w->task) : NULL;
        bp_lease_event_kind why = 0;
        if (now - w->last_seen > dead_after)
            why = BP_LEASE_EV_WORKER_DEAD;
        else if (k && now - w->progress_at > t->cfg.stall_ms)
            why = BP_LEASE_EV_WORKER_STALLED;
        else if (k && k->deadline && now > k->deadline)
            why = BP_LEASE_EV_WORKER_STALLED;
        if (!why)
            continue;
        push(ev, cap, n, why, wid, w->task, k ? k->attempts : 0);
        if (k && k->state == BP_LEASE_LEASED && k->worker == wid)
            lose_lease(t, k, 1, ev, cap, n);
        free_worker(t, wid);
    }
}
