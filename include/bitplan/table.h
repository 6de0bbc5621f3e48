/* bitplan: the sensitivity table.
 *
 * One row per measured (tensor, block, format, method) cell: its exact byte
 * cost and the error (and optional cost) metrics measured for it. A table is
 * what a sweep produces and what the solver consumes, so a new budget
 * re-solves without re-measuring. Users may write tables by hand: the file is
 * a documented CSV interface (docs/table-format.md):
 *
 *   # bitplan.table/v1
 *   # model_hash=blake2b256:...
 *   tensor,format,bytes,mse
 *   model.layers.0.mlp.up_proj.weight,int4_g128_asym,26112,1.25e-05
 *
 * Storage is flat: one array per column and an interned string pool, so
 * memory is proportional to the number of rows and distinct names (a table
 * may hold 10^7 rows). Strings returned by accessors point into the pool and
 * stay valid until bp_table_destroy (the pool never moves a stored string).
 */
#ifndef BITPLAN_TABLE_H
#define BITPLAN_TABLE_H

#include <stddef.h>
#include <stdint.h>

#include "bitplan/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BP_TABLE_SCHEMA "bitplan.table/v1"

/* Metric columns. The first BP_METRIC_N_ERROR are error metrics a plan can
 * be optimized for; latency_us and bops are measured costs. */
typedef enum bp_metric {
    BP_METRIC_MSE = 0,   /* mean squared weight error */
    BP_METRIC_HDIAG,     /* error weighted by the Hessian diagonal */
    BP_METRIC_HFULL,     /* error under the full input Hessian */
    BP_METRIC_GPTQ,      /* GPTQ reconstruction error */
    BP_METRIC_DKL,       /* KL divergence of the model output */
    BP_METRIC_LATENCY_US, /* microseconds */
    BP_METRIC_BOPS,      /* bit operations */
    BP_METRIC_COUNT
} bp_metric;

#define BP_METRIC_N_ERROR 5

/* Column name of a metric ("mse", ..., "latency_us", "bops"); NULL when out
 * of range. */
const char *bp_table_metric_name(bp_metric m);

/* The metric named name (exact, lowercase), or -1 when unknown. */
int bp_table_metric_from_name(const char *name);

/* How the weights of a cell are quantized: round-to-nearest, GPTQ in
 * natural column order, or GPTQ with act-order and static groups
 * (docs/gptq.md section 3). */
typedef enum bp_quant_method {
    BP_METHOD_RTN = 0,
    BP_METHOD_GPTQ = 1,
    BP_METHOD_GPTQ_ACT = 2
} bp_quant_method;

#define BP_METHOD_COUNT 3

/* "rtn", "gptq" or "gptq_act"; NULL when out of range. */
const char *bp_table_method_name(bp_quant_method m);
/* BP_METHOD_* for "rtn"/"gptq"/"gptq_act", or -1. */
int bp_table_method_from_name(const char *name);

/* 1 for the methods that run GPTQ (and so need the input Hessian): GPTQ and
 * GPTQ_ACT; 0 otherwise. */
int bp_method_is_gptq(bp_quant_method m);

/* The bp_gptq_factor_new_ex flags a GPTQ method builds its factor with:
 * 1u (= BP_GPTQ_ACT_ORDER of bitplan/gptq.h; a literal here so this header
 * does not depend on gptq.h) for GPTQ_ACT, 0 otherwise. */
unsigned bp_method_gptq_flags(bp_quant_method m);

/* One cell. For bp_table_add_row the strings are copied; from
 * bp_table_get_row they point into the table's pool. */
typedef struct bp_table_row {
    const char *tensor;   /* required, non-empty */
    const char *block;    /* NULL or "" = whole tensor (reserved) */
    const char *format;   /* required, non-empty (not checked against the
                             format registry: a table may name formats a
                             newer bitplan knows) */
    bp_quant_method method;
    uint64_t bytes;       /* > 0 */
    int64_t rows;         /* 0 = not given */
    int64_t cols;         /* 0 = not given */
    uint64_t params;      /* weight count; 0 = not given */
    double metric[BP_METRIC_COUNT]; /* NaN = not measured; else finite >= 0 */
} bp_table_row;

typedef struct bp_table bp_table;

/* An empty table. Caller owns the result (bp_table_destroy); NULL on OOM. */
bp_table *bp_table_new(void);
void bp_table_destroy(bp_table **t);

/* Fill *row with "nothing measured": strings NULL, numbers 0, metrics NaN.
 * Start every row with this so new fields get safe defaults. */
void bp_table_row_init(bp_table_row *row);

/* Append a row (strings copied). Validates: tensor and format non-empty,
 * no control characters in strings, bytes > 0, rows/cols/params >= 0 and
 * params == rows * cols when all three are given on a whole-tensor row,
 * every metric NaN or finite >= 0, and the key (tensor, block, format,
 * method) not already present. BP_EINVAL naming the tensor and field,
 * BP_ENOMEM. On failure the table is unchanged. */
int bp_table_add_row(bp_table *t, const bp_table_row *row, bp_error *err);

/* Number of rows. */
size_t bp_table_count(const bp_table *t);

/* Row i in insertion (file) order. BP_EINVAL when i is out of range. */
int bp_table_get_row(const bp_table *t, size_t i, bp_table_row *out);

/* Index of the row with this key, or -1. block NULL = whole tensor. */
long bp_table_find(const bp_table *t, const char *tensor, const char *block,
                   const char *format, bp_quant_method method);

/* 1 when metric m is a column of the table: it was a header column of the
 * file read, was declared with bp_table_declare_metric, or some row has a
 * value for it. Columns are what bp_table_write emits. */
int bp_table_has_metric(const bp_table *t, bp_metric m);

/* Make metric m a column even if no row has a value (cells stay empty). */
int bp_table_declare_metric(bp_table *t, bp_metric m, bp_error *err);

/* Set (or replace) a metadata entry. key: [A-Za-z0-9_.-]+; value: no
 * control characters. Entries keep their first-set order. Conventional keys:
 * model, model_hash, calibration_hash, tool_version (docs/table-format.md). */
int bp_table_set_meta(bp_table *t, const char *key, const char *value,
                      bp_error *err);
/* Value for key (owned by the table), or NULL. */
const char *bp_table_get_meta(const bp_table *t, const char *key);
size_t bp_table_meta_count(const bp_table *t);
/* i-th entry in order; BP_EINVAL when out of range. Strings owned by t. */
int bp_table_meta_at(const bp_table *t, size_t i, const char **key,
                     const char **value);

/* Write the table as CSV: schema line, metadata lines, header
 *   tensor,block,format,method,bytes,rows,cols,params,<metric columns>
 * (metric columns in bp_metric order), then rows in insertion order.
 * Doubles are printed with "%.17g" so they read back bit-exactly. Output is
 * a function of the table only. Writes a temporary file in the same
 * directory and renames it into place. BP_EINVAL when no metric column
 * exists, BP_EIO naming the path. */
int bp_table_write(const bp_table *t, const char *path, bp_error *err);

/* Read and validate a table file. Caller owns *out (NULL on failure).
 * Errors (BP_EFORMAT, BP_ENOTFOUND, BP_EIO, BP_ENOMEM) name the file, the
 * line, the column and the reason: "t.csv:7: column \"bytes\": ...". */
int bp_table_read(const char *path, bp_table **out, bp_error *err);

#ifdef __cplusplus
}
#endif
#endif
