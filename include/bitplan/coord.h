/* bitplan: the coordinator — job table, task leasing, persistence.
 *
 * A coordinator binds two ROUTER sockets: one for clients (submit, status,
 * result, cancel, jobs) and one for workers (Majordomo-style: ready ->
 * welcome, task -> task_result | task_failed, heartbeats both ways through
 * ZMTP and through application heartbeats carrying a progress counter). It
 * turns each job spec into a job driver (task.h), leases the driver's tasks
 * to workers one at a time (credit 1 per worker), feeds results back, and
 * journals jobs and caches task results under a state directory so a
 * restarted coordinator resumes where it was. docs/daemon.md describes the
 * behaviour, the state layout and the limits; docs/security.md the CURVE
 * setup.
 *
 * Threading: a bp_coord and everything it creates (ZeroMQ context, sockets,
 * ZAP handler) belong to the thread that created it. All ZeroMQ traffic of
 * the process stays on that thread.
 */
#ifndef BITPLAN_COORD_H
#define BITPLAN_COORD_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "bitplan/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BP_COORD_JOB_ID_MAX 32   /* bytes including NUL */
#define BP_COORD_STATE_MAX 16

typedef struct bp_coord_opts {
    const char *client_bind;  /* client endpoint, e.g. tcp://127.0.0.1:5555; NULL: none */
    const char *worker_bind;  /* worker endpoint (required) */
    const char *state_dir;    /* journal + result cache; NULL: nothing persisted */
    int64_t heartbeat_ms;     /* worker heartbeat interval (1000) */
    uint32_t liveness;        /* missed heartbeats before a worker is dead (3) */
    int64_t stall_ms;         /* progress-counter stall window (60000) */
    int64_t task_timeout_ms;  /* hard per-lease deadline, 0 = none */
    uint32_t max_attempts;    /* worker deaths per task before quarantine (3) */
    uint32_t max_workers;     /* connected workers (1024) */
    uint32_t max_jobs;        /* jobs kept, finished ones evicted oldest first (1000) */
    uint32_t max_active_jobs; /* queued + running jobs (64) */
    uint32_t max_queued_tasks;/* tasks buffered per job from its driver (10000) */
    /* CURVE: secret key (Z85, 40 chars) and the allow-list file (one Z85
     * public key per line, '#' comments). Both set = CURVE on both sockets
     * with a fail-closed ZAP handler; both NULL = no security. */
    const char *curve_secret_key;
    const char *allow_keys_file;
    FILE *log;                /* event log, NULL = silent */
} bp_coord_opts;

void bp_coord_opts_default(bp_coord_opts *o);

typedef struct bp_coord bp_coord;

/* Create the coordinator: ZeroMQ context, ZAP handler (CURVE only, bound
 * before the sockets), sockets bound, journal replayed (unfinished jobs are
 * rebuilt from their specs and resume, using cached task results).
 * Registers the runtime's kinds first (bp_runtime_register_kinds).
 * Caller owns *out (bp_coord_destroy). */
int bp_coord_new(const bp_coord_opts *opts, bp_coord **out, bp_error *err);
/* One iteration: wait up to timeout_ms for traffic, handle it, expire
 * leases, dispatch tasks. BP_OK, or BP_EIO if polling failed. */
int bp_coord_poll(bp_coord *c, int timeout_ms, bp_error *err);
/* Loop bp_coord_poll until *stop is non-zero (set it from a signal
 * handler). */
int bp_coord_run(bp_coord *c, volatile sig_atomic_t *stop, bp_error *err);
/* Close sockets and the context, free everything. Safe on NULL / twice. */
void bp_coord_destroy(bp_coord **p);

/* In-process job API (what the client socket does for remote clients). */
int bp_coord_submit(bp_coord *c, const char *spec_json, size_t len,
                    char job_id[BP_COORD_JOB_ID_MAX], bp_error *err);

typedef struct bp_coord_job_info {
    char job[BP_COORD_JOB_ID_MAX];
    char state[BP_COORD_STATE_MAX];   /* queued, running, done, failed, canceled */
    uint64_t done, total;             /* tasks (the driver's own count) */
    int has_eta;
    double eta_s;
    int error_code;                   /* bp code when failed/canceled, else 0 */
    char error[BP_ERROR_MSG_MAX];
} bp_coord_job_info;

/* BP_ENOTFOUND for an unknown job. */
int bp_coord_status(bp_coord *c, const char *job, bp_coord_job_info *info, bp_error *err);
/* The result of a done job (malloc'ed copy, caller frees). BP_ENOTFOUND;
 * BP_EINVAL while the job is not finished; the job's own error when it
 * failed or was canceled. */
int bp_coord_result(bp_coord *c, const char *job, char **json, bp_error *err);
int bp_coord_cancel(bp_coord *c, const char *job, bp_error *err);

typedef struct bp_coord_stats {
    uint64_t workers;            /* connected now */
    uint64_t workers_joined;
    uint64_t workers_lost;       /* dead, stalled or invalid */
    uint64_t tasks_leased;
    uint64_t results_accepted;
    uint64_t results_dropped;    /* late or duplicate */
    uint64_t cache_hits;
    uint64_t tasks_requeued;
    uint64_t tasks_quarantined;
    uint64_t protocol_errors;
    uint64_t identity_mismatches; /* worker messages from a key other than the peer's (dropped) */
} bp_coord_stats;

void bp_coord_get_stats(const bp_coord *c, bp_coord_stats *st);

/* Embedded mode, for `bitplan plan` without a daemon: spawn n_workers local
 * workers (<= 0: one per online core) with posix_spawn of the bitplan
 * executable (`/proc/self/exe`, or $BITPLAN_EXE if set) as
 * `worker --connect ipc://<tmpdir>/w.sock`, then run a coordinator on that
 * ipc endpoint in this thread until the one job spec_json finishes,
 * showing a progress bar on stderr unless quiet. Workers that die are
 * respawned (a bounded number of times) and their tasks retried, as in the
 * daemon. Finally the workers are stopped and reaped (no zombies).
 *
 * CALLER CONSTRAINT: call this before this process has created any ZeroMQ
 * context or run any OpenMP parallel region, so that the workers start
 * from a clean process (they are exec'ed, so nothing is inherited, but
 * their environment is prepared here: OMP_WAIT_POLICY=PASSIVE,
 * OMP_DYNAMIC=false, OMP_NUM_THREADS = cores / workers unless already set).
 *
 * *result_json (malloc'ed, caller frees) is the job's result. Returns the
 * job's error when it fails. */
int bp_coord_run_embedded(const char *spec_json, int n_workers, int quiet, char **result_json,
                          bp_error *err);

typedef struct bp_coord_embedded_opts {
    int n_workers;              /* <= 0: one per core */
    int threads_per_worker;     /* <= 0: cores / workers (at least 1) */
    int quiet;
    const char *exe;            /* NULL: $BITPLAN_EXE or /proc/self/exe */
    int64_t heartbeat_ms;       /* 0: default */
    int64_t stall_ms;           /* 0: default */
    uint32_t max_attempts;      /* 0: default */
    uint32_t max_respawns;      /* 0: 4 x workers + 8 */
    int64_t timeout_ms;         /* 0: none; BP_ETIMEOUT when exceeded */
} bp_coord_embedded_opts;

void bp_coord_embedded_opts_default(bp_coord_embedded_opts *o);
int bp_coord_run_embedded_ex(const char *spec_json, const bp_coord_embedded_opts *o,
                             char **result_json, bp_error *err);

/* ---- CURVE keys (docs/security.md) ----------------------------------- */

#define BP_CURVE_KEY_LEN 40 /* Z85 characters */

/* Read a Z85 key into out (41 bytes): from the file arg (the first line
 * that is not blank or a '#' comment), or arg itself when it is not a
 * readable file and is 40 Z85 characters. BP_EINVAL / BP_EIO otherwise. */
int bp_curve_load_key(const char *arg, char out[BP_CURVE_KEY_LEN + 1], bp_error *err);
/* The public key of a Z85 secret key. */
int bp_curve_public_key(const char *secret, char out[BP_CURVE_KEY_LEN + 1], bp_error *err);
/* New key pair: PREFIX.pub (public, 0644) and PREFIX.key (secret, 0600;
 * created with O_EXCL unless force). */
int bp_curve_keygen(const char *prefix, int force, bp_error *err);

#ifdef __cplusplus
}
#endif
#endif
