/* bitplan: the worker process runtime.
 *
 * A worker connects a DEALER socket to the coordinator's worker endpoint,
 * says `ready`, and runs the tasks it is leased, one at a time (credit-based
 * flow: the coordinator never sends a second task before the first one's
 * result). Threads:
 *   - the calling (I/O) thread makes every ZeroMQ call: zmq_poll with the
 *     heartbeat interval as timeout, heartbeats carrying the progress
 *     counter, task intake, result sending, reconnection;
 *   - one compute thread runs the task function (bp_task_lookup(kind)); it
 *     may open OpenMP regions, never touches ZeroMQ, advances an atomic
 *     progress counter and hands its result back through a mutex-protected
 *     slot, waking the I/O thread through a pipe.
 * On `disconnect` (the coordinator restarted, or declared this worker dead
 * or stalled) the worker closes its socket and registers again on a new one
 * with exponential backoff. If a task is still running then, the work is
 * abandoned: with reexec_argv set the process re-executes itself (the only
 * way to stop a hung compute thread); without it the worker waits for the
 * task to end before registering again.
 *
 * OpenMP environment (OMP_WAIT_POLICY=PASSIVE, OMP_DYNAMIC=false) must be in
 * the process environment at exec time — libgomp reads it in a load-time
 * constructor; bp_coord_run_embedded's spawner does this. opts.threads is
 * applied with omp_set_num_threads.
 */
#ifndef BITPLAN_WORKER_H
#define BITPLAN_WORKER_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "bitplan/error.h"
#include "bitplan/task.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bp_worker_opts {
    const char *endpoint;       /* coordinator worker endpoint, e.g. tcp://host:5556 */
    int threads;                /* OpenMP threads for tasks; <= 0: all cores */
    const char *name;           /* NULL: "<hostname>:<pid>" */
    /* CURVE (all three Z85, 40 chars) or all NULL for no security */
    const char *server_key;     /* coordinator public key */
    const char *public_key;     /* this worker's public key */
    const char *secret_key;     /* this worker's secret key */
    int64_t heartbeat_ms;       /* until `welcome` says otherwise (default 1000) */
    int64_t reconnect_min_ms;   /* backoff start (default 250) */
    int64_t reconnect_max_ms;   /* backoff ceiling (default 32000) */
    char *const *reexec_argv;   /* argv to re-exec /proc/self/exe with, or NULL */
    volatile sig_atomic_t *stop;/* set (e.g. by a signal handler) to leave */
    FILE *log;                  /* diagnostics, NULL = silent */
} bp_worker_opts;

void bp_worker_opts_default(bp_worker_opts *o);

/* Run until *opts->stop is set. Returns BP_OK after a clean stop (a
 * `disconnect` is sent), or an error for bad options / socket setup. */
int bp_worker_run(const bp_worker_opts *opts, bp_error *err);

/* Register the task kinds and job drivers this build knows: the job
 * module's built-ins (bp_job_register_tasks, when linked in) and, when the
 * environment has BITPLAN_TEST_KINDS=1, the test kinds below. Call once at
 * start-up of serve, worker and embedded mode. Returns BP_OK. */
int bp_runtime_register_kinds(void);

/* Test kinds (for the runtime's own tests and benchmarks):
 *   job driver "test", spec {"kind":"test","tasks":N,"sleep_ms":M,
 *     "fail_task":i,"crash_task":i,"hang_task":i,"seed":S,
 *     "task_kind":"test_task"|"noop","count_file":PATH,"once_dir":DIR}
 *     (all but kind and tasks optional; -1 = none) emits N tasks and
 *     combines their results in index order into its result JSON;
 *   task "test_task", params {i, sleep_ms, mode, seed[, count_file,
 *     once_dir]}: sleeps sleep_ms advancing progress every ms, appends
 *     "<i>\n" to count_file, and returns a value that depends only on
 *     (i, seed). mode "fail" returns an error, "crash" kills its process,
 *     "hang" spins forever without advancing progress. With once_dir, crash
 *     and hang happen only on the first execution (a marker file).
 *   task "noop": returns an empty map at once.
 * Always registers, whatever the environment. */
int bp_runtime_register_test_kinds(void);
/* The input hash of test task i (mode "ok", "fail", "crash" or "hang"). */
void bp_runtime_test_task_hash(uint64_t i, uint64_t seed, const char *mode,
                               char out[BP_HASH_HEX_LEN + 1]);

#ifdef __cplusplus
}
#endif
#endif
