/* bitplan: the coordinator's lease table — which worker holds which task,
 * until when, and what happens when a worker dies or stops making progress.
 *
 * Pure bookkeeping with an injected clock (every call takes `now`, in ms of
 * a monotonic clock), so the state machine is tested without sockets or
 * sleeps. The coordinator owns the task queues; the table reports what to
 * put back with events.
 *
 * Task states: queued -> leased -> done | failed, or back to queued when the
 * lease is lost (worker dead, disconnected, stalled, past its deadline).
 * A lease lost to a worker *death or stall* counts as an attempt; once a task
 * has used max_attempts it is quarantined instead of requeued (a task that
 * keeps killing workers must not loop forever). A graceful disconnect or a
 * protocol violation by the worker requeues without counting.
 *
 * Liveness, per worker:
 *   - dead: nothing received for liveness x heartbeat_ms;
 *   - stalled: it holds a lease and its progress counter has not changed
 *     for stall_ms (a hung computation behind a live socket);
 *   - over deadline: task_timeout_ms (0 = none) since the lease started.
 * A dead or stalled worker is removed from the table (the coordinator
 * forgets its routing id and tells it to disconnect).
 *
 * Results are accepted exactly once: bp_lease_complete succeeds only for the
 * worker that currently holds the lease, so a late result from an expired
 * lease, or a duplicate, is refused and the caller drops it.
 *
 * Not thread-safe; one table per coordinator thread.
 */
#ifndef BITPLAN_LEASE_H
#define BITPLAN_LEASE_H

#include <stddef.h>
#include <stdint.h>

#include "bitplan/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bp_lease_cfg {
    int64_t heartbeat_ms;    /* worker heartbeat interval (default 1000) */
    uint32_t liveness;       /* missed intervals before a worker is dead (3) */
    int64_t stall_ms;        /* progress-counter stall window (60000) */
    int64_t task_timeout_ms; /* hard lease deadline, 0 = none (default 0) */
    uint32_t max_attempts;   /* lost leases before quarantine (3) */
    uint32_t max_workers;    /* table capacity (4096) */
} bp_lease_cfg;

void bp_lease_cfg_default(bp_lease_cfg *cfg);

typedef enum bp_lease_state {
    BP_LEASE_NONE = 0,      /* unknown task id */
    BP_LEASE_QUEUED,
    BP_LEASE_LEASED,
    BP_LEASE_DONE,
    BP_LEASE_FAILED,        /* the task reported a deterministic error */
    BP_LEASE_QUARANTINED,   /* lost max_attempts leases */
} bp_lease_state;

typedef enum bp_lease_event_kind {
    BP_LEASE_EV_WORKER_DEAD = 1, /* silent too long; removed */
    BP_LEASE_EV_WORKER_STALLED,  /* lease stalled or past deadline; removed */
    BP_LEASE_EV_REQUEUED,        /* task back to queued: put it back in its queue */
    BP_LEASE_EV_QUARANTINED,     /* task used its attempts: fail its job */
} bp_lease_event_kind;

typedef struct bp_lease_event {
    bp_lease_event_kind kind;
    uint32_t worker;   /* worker events; for task events, the last holder */
    uint64_t task;     /* task events; for worker events, the task held or 0 */
    uint32_t attempts; /* task events: attempts used so far */
} bp_lease_event;

typedef struct bp_lease_table bp_lease_table;

/* New empty table (cfg NULL: defaults; 0 fields take their defaults).
 * Caller owns *out (bp_lease_table_destroy). BP_OK or BP_ENOMEM. */
int bp_lease_table_new(const bp_lease_cfg *cfg, bp_lease_table **out);
void bp_lease_table_destroy(bp_lease_table **p);
/* The effective configuration. */
const bp_lease_cfg *bp_lease_table_cfg(const bp_lease_table *t);

/* Add task id (!= 0, unique) in state queued. BP_EINVAL if it exists. */
int bp_lease_task_add(bp_lease_table *t, uint64_t id);
/* Forget a task that is not leased (done, failed, quarantined, queued).
 * BP_EINVAL while leased (wait for its completion or expiry), BP_ENOTFOUND
 * if unknown. */
int bp_lease_task_remove(bp_lease_table *t, uint64_t id);
/* State (BP_LEASE_NONE if unknown); attempts and holder are optional. */
bp_lease_state bp_lease_task_state(const bp_lease_table *t, uint64_t id, uint32_t *attempts,
                                   uint32_t *worker);
size_t bp_lease_task_count(const bp_lease_table *t, bp_lease_state state);

/* Register a worker seen at now. *wid is its handle until it is removed.
 * BP_ENOMEM when max_workers are registered. */
int bp_lease_worker_add(bp_lease_table *t, int64_t now, uint32_t *wid);
/* Anything received from the worker: refreshes liveness; progress (NULL if
 * the message carried none) restarts the stall window when it changed.
 * BP_ENOTFOUND for an unknown wid. */
int bp_lease_worker_seen(bp_lease_table *t, uint32_t wid, int64_t now,
                         const uint64_t *progress);
/* Task the worker holds, 0 if idle or unknown. */
uint64_t bp_lease_worker_task(const bp_lease_table *t, uint32_t wid);
int bp_lease_worker_exists(const bp_lease_table *t, uint32_t wid);
size_t bp_lease_worker_count(const bp_lease_table *t);
/* Remove a worker. Its lease, if any, is lost: counted as an attempt when
 * count_attempt (a crash) and not when it left cleanly. Appends
 * REQUEUED/QUARANTINED events to ev[*n..cap). BP_ENOTFOUND if unknown. */
int bp_lease_worker_remove(bp_lease_table *t, uint32_t wid, int count_attempt,
                           bp_lease_event *ev, size_t cap, size_t *n);

/* Lease queued task to idle worker wid from now. BP_EINVAL if the task is
 * not queued or the worker is busy, BP_ENOTFOUND if either is unknown. */
int bp_lease_grant(bp_lease_table *t, uint32_t wid, uint64_t task, int64_t now);
/* wid delivered a result for task. BP_OK: accepted (task done, worker idle).
 * BP_ENOTFOUND: wid does not hold that lease (late, duplicate or foreign
 * result): drop the result. */
int bp_lease_complete(bp_lease_table *t, uint32_t wid, uint64_t task);
/* wid reports a deterministic failure for task: task failed, worker idle.
 * Same return codes as bp_lease_complete. */
int bp_lease_fail(bp_lease_table *t, uint32_t wid, uint64_t task);

/* Expire dead and stalled workers at now. Appends events to ev[*n..cap):
 * one WORKER_DEAD/WORKER_STALLED per removed worker followed by its task's
 * REQUEUED/QUARANTINED. Stops early when fewer than 2 slots remain; call
 * again while *n == cap. */
void bp_lease_tick(bp_lease_table *t, int64_t now, bp_lease_event *ev, size_t cap, size_t *n);

#ifdef __cplusplus
}
#endif
#endif
