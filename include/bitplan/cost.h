/* bitplan: cost models other than bytes, so one solve can respect several
 * budgets (memory, latency, compute, KV cache) at once.
 *
 * Every model gives a (tensor, format) choice a cost; the solver adds them.
 * Full reference with every formula: docs/cost-models.md.
 *
 *  - Latency, roofline (bp_cost_latency_us): a hardware profile
 *    (bp_hw_profile: memory bandwidth, dense peak ops/s per compute class,
 *    optional per-kernel overhead) and a linear layer [rows x cols]:
 *      time = max((weight bytes + activation bytes) / bandwidth,
 *                 2 * B * rows * cols / peak(class)) + overhead
 *    at decode batch B, or at prefill length L with B = L.
 *  - Latency, measured (bp_latency_table): a user CSV of microseconds per
 *    (rows, cols, format[, phase, batch]).
 *  - BOPS (bp_cost_bops): rows * cols * w_bits * a_bits * tokens.
 *  - KV cache bytes (bp_kv_bytes) per layer for a KV precision among f16,
 *    fp8_e4m3, int8, int4.
 *
 * A weight matrix has `rows` output channels and `cols` input channels, as
 * in include/bitplan/format.h. Formats are bp_format values from
 * bp_format_parse(); a bp_format that is not exactly what bp_format_parse
 * gives for its name is refused with BP_EINVAL.
 */
#ifndef BITPLAN_COST_H
#define BITPLAN_COST_H

#include <stddef.h>
#include <stdint.h>

#include "bitplan/error.h"
#include "bitplan/format.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------
 * Compute classes: which tensor-op family multiplies a format's weights.
 * ------------------------------------------------------------------------- */

typedef enum bp_compute_class {
    BP_COMPUTE_FP16 = 0, /* 16-bit float tensor ops (fp16 and bf16, fp32
                            accumulate); also the dequantize-to-fp16 fallback */
    BP_COMPUTE_INT8,     /* int8 x int8 tensor ops (W8A8) */
    BP_COMPUTE_FP8,      /* fp8 (E4M3) tensor ops (W8A8) */
    BP_COMPUTE_INT4,     /* int4 x int4 tensor ops (W4A4) */
    BP_COMPUTE_FP4,      /* fp4 (E2M1, block-scaled) tensor ops (W4A4) */
    BP_COMPUTE_COUNT
} bp_compute_class;

/* "fp16", "int8", "fp8", "int4", "fp4" (the profile keys); NULL when c is
 * out of range. */
const char *bp_compute_class_name(bp_compute_class c);

/* Inverse of bp_compute_class_name. BP_EINVAL naming the text and listing
 * the classes. */
int bp_compute_class_parse(const char *name, bp_compute_class *out, bp_error *err);

/* Operand bits of a class: 16, 8, 8, 4, 4; 0 when c is out of range. */
int bp_compute_class_bits(bp_compute_class c);

/* The format's native class, independent of hardware:
 *   int8_*                 -> int8      fp8_e4m3       -> fp8
 *   int4_*                 -> int4      mxfp4, nvfp4   -> fp4
 *   int2/3/5/6_*, f16, bf16 -> fp16 (no tensor op of that width: weights are
 *                              dequantized to fp16 in the kernel)
 * BP_EINVAL for NULL or a bp_format that bp_format_parse did not produce. */
int bp_cost_native_class(const bp_format *f, bp_compute_class *out, bp_error *err);

/* ---------------------------------------------------------------------------
 * Hardware profiles (docs/cost-models.md, "Profile schema").
 * ------------------------------------------------------------------------- */

#define BP_HWPROFILE_SCHEMA "bitplan.hwprofile/v1"
#define BP_HW_NAME_MAX 64
#define BP_HW_DESC_MAX 160
#define BP_HWPROFILE_MAX_FILE (1u << 20) /* bytes */

/* Plain data; a caller may build one by hand (every number as validated
 * by bp_hw_profile_load) or adjust a loaded one. */
typedef struct bp_hw_profile {
    char name[BP_HW_NAME_MAX];        /* "h100", ... */
    char description[BP_HW_DESC_MAX]; /* "NVIDIA H100 SXM5 80GB"; may be "" */
    double memory_bandwidth;          /* bytes/s, > 0 */
    double peak_ops[BP_COMPUTE_COUNT];/* dense ops/s (1 multiply-add = 2 ops);
                                         0 = no native support; FP16 > 0 */
    double launch_overhead_us;        /* µs added per linear layer, >= 0 */
    int weight_only;                  /* 1: every format runs in the FP16
                                         class (W*A16 kernels), whatever the
                                         hardware has */
} bp_hw_profile;

/* The compiled-in profiles, equal to docs/profiles/<name>.json:
 * "h100" (H100 SXM5 80GB), "a100" (A100 80GB SXM), "rtx4090", "cpu"
 * (a nominal desktop CPU). *out is a new profile owned by the caller
 * (bp_hw_profile_destroy). BP_ENOTFOUND naming the unknown name and the
 * known ones. */
int bp_hw_profile_builtin(const char *name, bp_hw_profile **out, bp_error *err);

/* Names of the builtins, in a fixed order; NULL past the end. */
const char *bp_hw_profile_builtin_name(size_t i);

/* Load and validate a bitplan.hwprofile/v1 JSON file: known keys only,
 * every number finite and positive (launch_overhead_us: >= 0), fp16 peak
 * present. BP_ENOTFOUND / BP_EIO when the file cannot be read, BP_EFORMAT
 * with "<path>: <key>: <reason>" otherwise. *out is owned by the caller. */
int bp_hw_profile_load(const char *path, bp_hw_profile **out, bp_error *err);

/* The same from JSON text; `source` names it in messages (NULL: "profile"). */
int bp_hw_profile_from_json_text(const char *text, const char *source,
                                 bp_hw_profile **out, bp_error *err);

/* For a --profile argument: a builtin name when `name_or_path` is one,
 * else a file path. */
int bp_hw_profile_open(const char *name_or_path, bp_hw_profile **out, bp_error *err);

/* Checks a hand-built profile with the rules of bp_hw_profile_load.
 * BP_EINVAL naming the profile and field. */
int bp_hw_profile_validate(const bp_hw_profile *hw, bp_error *err);

/* Frees *p and sets it to NULL; safe on NULL and twice. */
void bp_hw_profile_destroy(bp_hw_profile **p);

/* The class a format runs in on hw: its native class when hw has a peak
 * for it and is not weight_only, else BP_COMPUTE_FP16. */
int bp_cost_compute_class(const bp_hw_profile *hw, const bp_format *f,
                          bp_compute_class *out, bp_error *err);

/* ---------------------------------------------------------------------------
 * Roofline latency.
 * ------------------------------------------------------------------------- */

typedef enum bp_cost_phase {
    BP_PHASE_DECODE = 0,  /* one token for each of B sequences */
    BP_PHASE_PREFILL = 1  /* L tokens of a prompt at once */
} bp_cost_phase;

/* "decode", "prefill"; NULL when out of range. */
const char *bp_cost_phase_name(bp_cost_phase p);
/* Inverse; BP_EINVAL naming the text. */
int bp_cost_phase_parse(const char *name, bp_cost_phase *out, bp_error *err);

/* Every term of one roofline evaluation (all in the units shown). */
typedef struct bp_roofline {
    bp_compute_class cls;      /* class used (bp_cost_compute_class) */
    uint64_t weight_bytes;     /* bp_format_bytes(f, rows, cols) */
    uint64_t activation_bytes; /* 2 * B * (cols + rows): fp16 in and out */
    double ops;                /* 2 * B * rows * cols */
    double memory_us;          /* 1e6 * (weight + activation bytes) / bandwidth */
    double compute_us;         /* 1e6 * ops / peak_ops[cls] */
    double overhead_us;        /* hw->launch_overhead_us */
    double total_us;           /* max(memory_us, compute_us) + overhead_us */
    int compute_bound;         /* 1 when compute_us > memory_us */
} bp_roofline;

/* Roofline terms for a linear layer [rows x cols] in format f, at decode
 * batch B = batch_or_len or prefill length L = batch_or_len (prefill of
 * several prompts: pass the total token count). rows, cols,
 * batch_or_len >= 1.
 * BP_EINVAL for NULL arguments, a bad profile/format/phase, sizes < 1 or
 * byte counts overflowing 64 bits; BP_EUNSUPPORTED when the format cannot
 * store the shape (bp_format_supports). */
int bp_cost_roofline(const bp_hw_profile *hw, const bp_format *f, int64_t rows,
                     int64_t cols, bp_cost_phase phase, int64_t batch_or_len,
                     bp_roofline *out, bp_error *err);

/* out_us = bp_cost_roofline(...).total_us; same errors. */
int bp_cost_latency_us(const bp_hw_profile *hw, const bp_format *f, int64_t rows,
                       int64_t cols, bp_cost_phase phase, int64_t batch_or_len,
                       double *out_us, bp_error *err);

/* ---------------------------------------------------------------------------
 * Measured latency tables (CSV, docs/cost-models.md "Latency table").
 *
 *   # comment lines and blank lines are skipped
 *   rows,cols,format,latency_us[,phase][,batch]     header, any column order
 *   4096,4096,int4_g128_asym,11.5,decode,1
 *
 * An entry without phase (column absent or cell empty) serves every phase;
 * without batch, every batch. A lookup takes the most specific entry
 * (phase and batch > phase only > neither).
 * ------------------------------------------------------------------------- */

typedef struct bp_latency_table bp_latency_table;

/* Read a CSV table. BP_ENOTFOUND / BP_EIO when unreadable; BP_EFORMAT with
 * "<path>:<line>: <reason>" for a bad header, a malformed or out-of-range
 * field, an unknown format, a shape the format cannot store, or a duplicate
 * of an earlier line. *out is owned by the caller. */
int bp_latency_table_load(const char *path, bp_latency_table **out, bp_error *err);

/* The same from text; `source` names it in messages (NULL: "table"). */
int bp_latency_table_from_text(const char *text, const char *source,
                               bp_latency_table **out, bp_error *err);

void bp_latency_table_destroy(bp_latency_table **t);

/* Number of entries. */
size_t bp_latency_table_count(const bp_latency_table *t);

/* Measured µs for (rows, cols, f, phase, batch); batch >= 1.
 * BP_ENOTFOUND with "<source>: no latency entry for <rows>x<cols> <format>
 * <phase> batch <B>" when nothing matches; BP_EINVAL for bad arguments. */
int bp_latency_table_lookup(const bp_latency_table *t, int64_t rows, int64_t cols,
                            const bp_format *f, bp_cost_phase phase, int64_t batch,
                            double *out_us, bp_error *err);

/* The documented fallback: the table's entry when there is one, else the
 * roofline on `fallback`. t or fallback may be NULL (not both); with
 * fallback NULL a missing entry is BP_ENOTFOUND. *from_table (optional)
 * is set to 1 when the value came from the table. */
int bp_cost_latency_lookup_us(const bp_latency_table *t, const bp_hw_profile *fallback,
                              const bp_format *f, int64_t rows, int64_t cols,
                              bp_cost_phase phase, int64_t batch, double *out_us,
                              int *from_table, bp_error *err);

/* ---------------------------------------------------------------------------
 * BOPS.
 * ------------------------------------------------------------------------- */

/* Bit operations of a linear layer over `tokens` tokens:
 *   rows * cols * w_bits * a_bits * tokens
 * with w_bits = f->bits (code bits; group parameters not counted) and
 * a_bits as given, or when a_bits is 0 the operand bits of the format's
 * native class (16 for fp16-class formats, 8 for int8_* and fp8_e4m3, 4 for
 * int4_*, mxfp4, nvfp4). a_bits in 1..32 otherwise. rows, cols,
 * tokens >= 1. BP_EINVAL for bad arguments or a result above UINT64_MAX. */
int bp_cost_bops(const bp_format *f, int64_t rows, int64_t cols, int64_t tokens,
                 int a_bits, uint64_t *out, bp_error *err);

/* ---------------------------------------------------------------------------
 * KV cache.
 * ------------------------------------------------------------------------- */

typedef enum bp_kv_format {
    BP_KV_F16 = 0,     /* 2 bytes per element */
    BP_KV_FP8_E4M3,    /* 1 byte per element + fp32 K and V scale per layer */
    BP_KV_INT8,        /* 1 byte per element + fp16 scale per (token, head) */
    BP_KV_INT4,        /* ceil(head_dim/2) bytes + fp16 scale per (token, head) */
    BP_KV_FORMAT_COUNT
} bp_kv_format;

typedef struct bp_kv_shape {
    int64_t n_layers;   /* >= 1 */
    int64_t n_kv_heads; /* >= 1 (grouped-query attention: the KV heads) */
    int64_t head_dim;   /* >= 1 */
} bp_kv_shape;

/* "f16", "fp8_e4m3", "int8", "int4"; NULL when out of range. */
const char *bp_kv_format_name(bp_kv_format f);
/* Inverse; BP_EINVAL naming the text and listing the names. */
int bp_kv_format_parse(const char *name, bp_kv_format *out, bp_error *err);

/* Bytes of ONE layer's K and V cache at `context` tokens for `batch`
 * sequences (T = batch * context, H = n_kv_heads, D = head_dim):
 *   f16       2 * T * H * D * 2
 *   fp8_e4m3  2 * T * H * D + 8
 *   int8      2 * T * H * (D + 2)
 *   int4      2 * T * H * (ceil(D/2) + 2)
 * context, batch >= 1. BP_EINVAL for bad arguments or overflow. */
int bp_kv_bytes(const bp_kv_shape *s, bp_kv_format f, int64_t context, int64_t batch,
                uint64_t *bytes, bp_error *err);

/* Sum of bp_kv_bytes over the s->n_layers layers, layer i in per_layer[i]. */
int bp_kv_bytes_total(const bp_kv_shape *s, const bp_kv_format *per_layer,
                      int64_t context, int64_t batch, uint64_t *bytes, bp_error *err);

#ifdef __cplusplus
}
#endif
#endif
