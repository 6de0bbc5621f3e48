/* bitplan: the plan file, the tool's output and the kernels' input.
 *
 * A plan is versioned JSON ("schema": "bitplan.plan/v1", every field in
 * docs/plan-format.md) saying which format every quantized tensor gets,
 * what it costs, and how the assignment was found. The writer is
 * byte-deterministic: objects are built in one fixed key order (not sorted),
 * tensors are in name order (byte-wise strcmp), doubles print with 17
 * significant digits so they read back bit-exactly, and wall-clock data lives
 * only in the optional "timing" object, which is omitted unless the plan's
 * deterministic flag is cleared.
 *
 * Derived fields are never taken on trust: a tensor's bytes and
 * bits_per_weight are computed from its format and shape, and the budget's
 * achieved totals and params from the tensors. The reader recomputes them
 * and rejects a file that disagrees.
 */
#ifndef BITPLAN_PLAN_H
#define BITPLAN_PLAN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "bitplan/budget.h"
#include "bitplan/cost.h"
#include "bitplan/error.h"
#include "bitplan/table.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BP_PLAN_SCHEMA "bitplan.plan/v1"

/* ---- intra-tensor blocks (reserved; no solver fills them yet) ----------
 * A tensor is cut along one axis into equal blocks of `size` rows or
 * columns (size must divide that dimension); block b (0-based, in order
 * along the axis) gets one of `formats`. The assignment is run-length
 * encoded: runs[i] = {format index, count}; counts are >= 1 and sum to the
 * number of blocks. Each block is stored as its own matrix, so the tensor's
 * bytes are the sum over blocks of bp_format_bytes(format, block shape).
 * The tensor's `format` must be the format covering the most blocks (ties:
 * the lowest index in `formats`). */
typedef enum bp_block_axis {
    BP_BLOCK_AXIS_COLS = 0, /* blocks of `size` input columns: rows x size */
    BP_BLOCK_AXIS_ROWS = 1  /* blocks of `size` output rows: size x cols */
} bp_block_axis;

typedef struct bp_plan_run {
    uint32_t format;  /* index into formats */
    uint64_t count;   /* consecutive blocks, >= 1 */
} bp_plan_run;

typedef struct bp_plan_blocks {
    bp_block_axis axis;
    int64_t size;                 /* rows or columns per block */
    const char *const *formats;   /* distinct canonical format names */
    size_t n_formats;
    const bp_plan_run *runs;
    size_t n_runs;
} bp_plan_blocks;

/* Validate blocks for a rows x cols tensor and compute its total bytes
 * (*bytes may be NULL) and dominant format index (*dominant may be NULL).
 * BP_EINVAL with a message naming the field ("runs[2]: format index 5 out
 * of range (3 formats)"). */
int bp_plan_blocks_validate(const bp_plan_blocks *b, int64_t rows, int64_t cols,
                            uint64_t *bytes, size_t *dominant, bp_error *err);

/* ---- tensors ------------------------------------------------------------ */

typedef struct bp_plan_tensor {
    const char *name;         /* non-empty, unique in the plan */
    int64_t rows, cols;       /* > 0: [out, in] */
    const char *dtype;        /* source dtype name, e.g. "BF16" */
    const char *format;       /* canonical format name */
    bp_quant_method method;   /* how it will be quantized */
    double predicted_error;   /* finite >= 0, or NaN = unknown (null) */
    const bp_plan_blocks *blocks; /* NULL = whole tensor */
    /* Output only (ignored by bp_plan_add_tensor, filled by get): */
    uint64_t bytes;           /* exact packed bytes */
    double bits_per_weight;   /* 8 * bytes / (rows * cols) */
} bp_plan_tensor;

typedef struct bp_plan bp_plan;

/* An empty plan with the deterministic flag set. Caller owns it; NULL on
 * OOM. */
bp_plan *bp_plan_new(void);
void bp_plan_destroy(bp_plan **p);

/* Add a tensor (everything copied). Validates the name, shape, dtype,
 * format (bp_format_parse + bp_format_supports), method, predicted error
 * and blocks; computes bytes and bits_per_weight. BP_EINVAL naming the
 * tensor (also for a duplicate name), BP_ENOMEM. */
int bp_plan_add_tensor(bp_plan *p, const bp_plan_tensor *t, bp_error *err);

/* Number of tensors; tensor i in name order. Strings and blocks in *out
 * are owned by the plan and valid until the next add or destroy.
 * BP_EINVAL when i is out of range. */
size_t bp_plan_tensor_count(const bp_plan *p);
int bp_plan_tensor_get(const bp_plan *p, size_t i, bp_plan_tensor *out);
/* Index of a tensor by name, or -1. */
long bp_plan_tensor_find(const bp_plan *p, const char *name);

/* ---- header sections -----------------------------------------------------
 * Strings are copied. Each returns BP_EINVAL on a bad value (message names
 * the field) or BP_ENOMEM. */

int bp_plan_set_tool(bp_plan *p, const char *name, const char *version,
                     bp_error *err);
/* hash may be NULL (not computed). */
int bp_plan_set_model(bp_plan *p, const char *path, const char *hash,
                      bp_error *err);
/* Both may be NULL: no calibration data (hash null) / no description. */
int bp_plan_set_calibration(bp_plan *p, const char *hash, const char *source,
                            bp_error *err);
/* An error metric (m < BP_METRIC_N_ERROR). */
int bp_plan_set_metric(bp_plan *p, bp_metric m, bp_error *err);
/* The budget asked for: given = BP_BUDGET_BITS or BP_BUDGET_BYTES says which
 * one the user gave; the other is the derived value (bytes =
 * bp_budget_capacity, bits = 8 * bytes / params). bits > 0 finite,
 * bytes > 0. Consistency with the tensors is checked by bp_plan_validate. */
int bp_plan_set_budget(bp_plan *p, bp_budget_kind given, double bits,
                       uint64_t bytes, bp_error *err);
/* status: "optimal" or "feasible". objective finite; bound and gap finite
 * or NaN (unknown, written null); gap >= 0. */
int bp_plan_set_solver(bp_plan *p, const char *name, const char *status,
                       double objective, double bound, double gap,
                       bp_error *err);
/* A timing entry in seconds (finite >= 0), e.g. "solve", "sweep"; replaces
 * an entry of the same key. Written only when the plan is not
 * deterministic. */
int bp_plan_set_timing(bp_plan *p, const char *key, double seconds,
                       bp_error *err);
/* 1 (default): omit "timing" so output depends only on the inputs. */
void bp_plan_set_deterministic(bp_plan *p, int deterministic);
/* The reserved "search" section: a JSON object given as text (NULL
 * removes it), written back verbatim in structure (key order kept). */
int bp_plan_set_search_json(bp_plan *p, const char *json_text, bp_error *err);

/* A read-only view of the header sections; strings owned by the plan
 * (NULL when unset or null). NaN for unknown numbers. */
typedef struct bp_plan_info {
    const char *tool_name, *tool_version;
    const char *model_path, *model_hash;
    const char *calibration_hash, *calibration_source;
    int metric;                     /* bp_metric, -1 when unset */
    bp_budget_kind budget_given;    /* BP_BUDGET_NONE when unset */
    double asked_bits;
    uint64_t asked_bytes;
    uint64_t achieved_bytes;        /* sum of tensor bytes */
    double achieved_bits;           /* 8 * achieved_bytes / params */
    uint64_t params;                /* sum of rows * cols */
    const char *solver_name, *solver_status;
    double objective, bound, gap;
    int deterministic;
    size_t n_timing;
    uint64_t kv_bytes;              /* kv_cache section total; 0 without one */
} bp_plan_info;

void bp_plan_get_info(const bp_plan *p, bp_plan_info *out);
/* Timing entry i (in insertion order); BP_EINVAL when out of range. */
int bp_plan_timing_at(const bp_plan *p, size_t i, const char **key,
                      double *seconds);
/* The search section as compact JSON; caller frees with free(). NULL when
 * absent (or on OOM). */
char *bp_plan_search_json(const bp_plan *p);

/* ---- KV cache (optional section) -------------------------------------------
 * The KV-cache precision chosen per layer, for `batch` sequences of
 * `context` tokens with n_kv_heads heads of head_dim. A layer's bytes are
 * bp_kv_bytes (include/bitplan/cost.h), never taken from the caller or the
 * file. When the section is present, the budget counts weights + KV bytes
 * against the asked bytes. */
typedef struct bp_plan_kv_layer {
    int64_t layer;          /* >= 0; strictly increasing along the list */
    bp_kv_format format;
    /* Output only (ignored by bp_plan_set_kv_cache, filled by get): */
    uint64_t bytes;         /* bp_kv_bytes of this layer */
} bp_plan_kv_layer;

typedef struct bp_plan_kv_cache {
    int64_t context, batch;         /* >= 1 */
    int64_t n_kv_heads, head_dim;   /* >= 1 */
    const bp_plan_kv_layer *layers; /* n_layers >= 1 entries */
    size_t n_layers;
    /* Output only: */
    uint64_t bytes;                 /* sum of the layers' bytes */
} bp_plan_kv_cache;

/* Set (everything copied; replaces an earlier section) or, with kv NULL,
 * remove the section. BP_EINVAL naming the field ("kv_cache.layers[2].layer:
 * 3 does not follow 3 (layers must be unique and increasing)"), BP_ENOMEM. */
int bp_plan_set_kv_cache(bp_plan *p, const bp_plan_kv_cache *kv, bp_error *err);
/* 1 and *out filled (layers owned by the plan, valid until the next set or
 * destroy) when the plan has the section, else 0. */
int bp_plan_get_kv_cache(const bp_plan *p, bp_plan_kv_cache *out);

/* ---- whole plan ------------------------------------------------------------ */

/* Check the plan is complete and consistent: tool, model, metric, budget
 * and solver set; at least one tensor; achieved bytes (plus the kv_cache
 * bytes when present) <= asked bytes; the
 * asked bits and bytes agree for params (within one byte). BP_EINVAL. */
int bp_plan_validate(const bp_plan *p, bp_error *err);

/* Serialize (validates first). Caller frees the result with free(); NULL
 * on failure with err set. Ends with a newline. */
char *bp_plan_to_string(const bp_plan *p, bp_error *err);

/* Validate, serialize, write to a temporary file next to path and rename
 * it into place. BP_EINVAL, BP_EIO naming the path, BP_ENOMEM. */
int bp_plan_write(const bp_plan *p, const char *path, bp_error *err);

/* Parse and validate a plan from text; source names it in messages.
 * Errors are BP_EFORMAT with the JSON path:
 *   "plan.json: tensors[3].format: unknown format \"int9\"".
 * Caller owns *out (NULL on failure). */
int bp_plan_from_string(const char *text, const char *source, bp_plan **out,
                        bp_error *err);
/* Same from a file (BP_ENOTFOUND / BP_EIO for file problems). */
int bp_plan_read(const char *path, bp_plan **out, bp_error *err);

/* Human summary: one line per tensor (name, shape, format, bits per weight,
 * bytes, predicted error), totals, the KV cache (one line per layer) when
 * present, budget and solver status and gap. */
void bp_plan_print_summary(const bp_plan *p, FILE *fp);

#ifdef __cplusplus
}
#endif
#endif
