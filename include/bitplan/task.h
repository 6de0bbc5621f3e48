/* bitplan: work units and job drivers — the seam between the distributed
 * runtime (coordinator, workers, journal) and the planning logic.
 *
 * A job is described by a JSON job spec (docs/job-spec.md) whose "kind"
 * selects a job driver. The coordinator asks the driver for tasks, leases
 * them to workers, and hands each finished task's result back to the
 * driver; when the driver is finished it yields the job's result (a plan,
 * as JSON text). Drivers are deterministic: the same spec and the same task
 * results always produce the same tasks (same indices, kinds, params and
 * input hashes) and the same final result. That is what makes a restarted
 * coordinator able to rebuild a job from its journal and its result cache,
 * and what makes a plan independent of how many workers took part.
 *
 * A task is (kind, params, binary inputs). Workers look the kind up in the
 * task registry and run it. A task function may run for a long time; it
 * advances *progress regularly (the worker's I/O thread reports the counter
 * in heartbeats so a hung computation is detected) and never touches
 * ZeroMQ.
 */
#ifndef BITPLAN_TASK_H
#define BITPLAN_TASK_H

#include <msgpack.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "bitplan/error.h"
#include "bitplan/hash.h"
#include "bitplan/proto.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BP_TASK_KIND_MAX 32

/* An owned binary buffer (bulk little-endian data next to a result). */
typedef struct bp_task_bin {
    char name[32];
    bp_wire_dtype dtype;
    uint64_t count;      /* elements */
    void *data;          /* malloc'ed, count * dtype size bytes */
} bp_task_bin;

/* ---- worker side ------------------------------------------------------- */

typedef struct bp_task_ctx {
    /* inputs (borrowed, valid during the call) */
    const msgpack_object *params;    /* a map; validate every field */
    const bp_bin_view *bins;         /* binary inputs */
    size_t n_bins;
    int threads;                     /* OpenMP threads the task may use */
    /* progress: advance it at least every few seconds of work */
    _Atomic uint64_t *progress;
    /* outputs: the task packs one msgpack map into result (initialized by
     * the caller) and may append owned binary buffers to out_bins (up to
     * BP_PROTO_MAX_BIN, via bp_task_add_bin) */
    msgpack_packer *result;
    bp_task_bin out_bins[BP_PROTO_MAX_BIN];
    size_t n_out_bins;
} bp_task_ctx;

typedef int (*bp_task_fn)(bp_task_ctx *ctx, bp_error *err);

/* Add an output buffer (copies data). BP_EINVAL past BP_PROTO_MAX_BIN. */
int bp_task_add_bin(bp_task_ctx *ctx, const char *name, bp_wire_dtype dtype,
                    const void *data, uint64_t count, bp_error *err);
/* Free the output buffers. */
void bp_task_ctx_free_bins(bp_task_ctx *ctx);

/* The function for a task kind, or NULL. The built-in kinds are registered
 * by the job module (bp_job_register_tasks); tests may register more. */
int bp_task_register(const char *kind, bp_task_fn fn);
bp_task_fn bp_task_lookup(const char *kind);

/* ---- coordinator side ------------------------------------------------- */

/* A task a driver wants run. The driver owns these until the next call. */
typedef struct bp_task_req {
    uint64_t index;                  /* driver-assigned, unique within the job */
    char kind[BP_TASK_KIND_MAX];
    const void *params_mp;           /* one msgpack map */
    size_t params_len;
    const bp_bin_view *bins;         /* binary inputs, may be NULL */
    size_t n_bins;
    /* content hash of (kind, params, bins, and anything the result depends
     * on such as the model's content hash): the result-cache key */
    char hash[BP_HASH_HEX_LEN + 1];
    uint64_t cost;                   /* relative cost estimate, for ETA */
} bp_task_req;

/* A finished task as the coordinator received it (or read from its cache). */
typedef struct bp_task_result {
    const msgpack_object *result;    /* the map the task packed */
    const bp_bin_view *bins;
    size_t n_bins;
} bp_task_result;

typedef struct bp_job_driver_ops {
    const char *kind;                /* the job spec "kind" it serves */
    /* Parse and validate the spec (JSON text). Cheap checks only; a missing
     * model etc. is reported here with a clear message. */
    int (*create)(const char *spec_json, size_t len, void **state, bp_error *err);
    /* Tasks that may run now and were not returned before. *n = 0 with
     * finished == 0 means "wait for results". */
    int (*next)(void *state, const bp_task_req **tasks, size_t *n, bp_error *err);
    /* A result for task index. Called at most once per index. An error
     * fails the job with that message. */
    int (*done)(void *state, uint64_t index, const bp_task_result *r, bp_error *err);
    /* 1 when every task is done and the result is ready. */
    int (*finished)(void *state);
    /* The job's result (plan JSON), malloc'ed, caller frees. */
    int (*result)(void *state, char **json, bp_error *err);
    /* Progress for status: tasks done / known so far, and cost done/total. */
    void (*progress)(void *state, uint64_t *done, uint64_t *total);
    void (*destroy)(void *state);
} bp_job_driver_ops;

/* Register the built-in task kinds (measure, hessian, solve) and the
 * "plan" job driver. Call once at start-up, before any thread runs tasks. */
void bp_job_register_tasks(void);

/* Run a job entirely in this process: create the driver for the spec's
 * kind, run every task it asks for here (through the same msgpack params
 * and results a worker would see), and return the job's result JSON
 * (caller frees). The reference for what the distributed runtime must
 * produce. */
int bp_job_run_local(const char *spec_json, size_t len, int quiet, char **result_json,
                     bp_error *err);

/* Register a driver (static storage). The built-in "plan" driver is
 * registered by bp_job_register_tasks. */
int bp_job_driver_register(const bp_job_driver_ops *ops);
/* The driver for a spec's "kind", or NULL. */
const bp_job_driver_ops *bp_job_driver_lookup(const char *kind);

#ifdef __cplusplus
}
#endif
#endif
