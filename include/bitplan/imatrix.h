/* bitplan: importance matrices in llama.cpp's legacy imatrix.dat format.
 *
 * An importance matrix holds, for each weight matrix, one value per input
 * channel: the sum over calibration tokens of the squared activation that
 * multiplies that channel, accumulated over `ncall` calls. bitplan uses the
 * per-channel mean, value / max(ncall, 1), as the importance weight (as
 * llama.cpp does when it loads the file).
 *
 * File layout (little-endian):
 *   int32 n_entries
 *   n_entries times: int32 name_len, name bytes (no NUL), int32 ncall,
 *                    int32 nval, float32[nval] values
 *   optional: int32 last_chunk, int32 len, len bytes of dataset file name
 *
 * Entry names are GGUF tensor names ("blk.3.attn_q.weight"); files written
 * by other tools may use Hugging Face names instead. Every entry is also
 * known under its Hugging Face Llama name ("model.layers.3.self_attn.q_proj
 * .weight"), and lookups accept either form. The mapping:
 *   blk.N.            <-> model.layers.N.
 *   attn_q/k/v        <-> self_attn.q_proj/k_proj/v_proj
 *   attn_output       <-> self_attn.o_proj
 *   ffn_gate/up/down  <-> mlp.gate_proj/up_proj/down_proj
 *   attn_norm         <-> input_layernorm
 *   ffn_norm          <-> post_attention_layernorm
 *   output            <-> lm_head
 *   token_embd        <-> model.embed_tokens
 *   output_norm       <-> model.norm
 * Names outside this table are kept as they are.
 */
#ifndef BITPLAN_IMATRIX_H
#define BITPLAN_IMATRIX_H

#include <stddef.h>
#include <stdint.h>

#include "bitplan/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BP_IMATRIX_MAX_NAME 4096        /* bytes in an entry name */
#define BP_IMATRIX_MAX_VALUES (1 << 28) /* values in one entry */
/* Room for any name converted by bp_imatrix_name_to_hf/_gguf. */
#define BP_IMATRIX_NAME_BUF (BP_IMATRIX_MAX_NAME + 64)

typedef struct bp_imatrix bp_imatrix;

/* One entry, as seen through bp_imatrix_entry_at. Pointers are owned by the
 * imatrix and valid until it is destroyed. */
typedef struct bp_imatrix_entry {
    const char *name;    /* as in the file (or as added) */
    const char *hf_name; /* Hugging Face name */
    int32_t ncall;
    int64_t n;           /* values */
    const float *sums;   /* as stored: sums of x^2 over ncall calls */
    const float *mean;   /* sums / max(ncall, 1): the importance weights */
} bp_imatrix_entry;

/* An empty importance matrix, to fill with bp_imatrix_add. Caller owns *out. */
int bp_imatrix_new(bp_imatrix **out, bp_error *err);

/* Read and validate a legacy imatrix.dat. BP_ENOTFOUND when missing,
 * BP_EUNSUPPORTED for a GGUF imatrix, BP_EFORMAT (message naming the file,
 * the entry and the reason) for a truncated file, out-of-range lengths,
 * negative ncall, values that are not finite or are negative, duplicate
 * entries (also two names that map to the same Hugging Face name), or
 * trailing bytes. Caller owns *out. */
int bp_imatrix_load(const char *path, bp_imatrix **out, bp_error *err);

void bp_imatrix_destroy(bp_imatrix **m);

/* Add an entry; sums[0..n) are stored values (sums of x^2 over ncall calls),
 * copied. BP_EINVAL for an empty or over-long name, ncall < 0, n outside
 * [1, BP_IMATRIX_MAX_VALUES], a value that is negative or not finite, or a
 * name (after mapping to Hugging Face) already present. */
int bp_imatrix_add(bp_imatrix *m, const char *name, int32_t ncall, const float *sums,
                   int64_t n, bp_error *err);

/* The optional trailer: last chunk index and calibration dataset name. */
int bp_imatrix_set_dataset(bp_imatrix *m, int32_t last_chunk, const char *dataset,
                           bp_error *err);
/* -1 and NULL when the file had no trailer. */
int32_t bp_imatrix_last_chunk(const bp_imatrix *m);
const char *bp_imatrix_dataset(const bp_imatrix *m);

/* Write the legacy format (through a temporary file renamed into place).
 * gguf_names != 0 writes every name in GGUF form (what llama.cpp expects);
 * 0 keeps names as they were loaded or added. */
int bp_imatrix_save(const bp_imatrix *m, const char *path, int gguf_names, bp_error *err);

size_t bp_imatrix_count(const bp_imatrix *m);
/* Entry i in file (or insertion) order. BP_EINVAL when i is out of range. */
int bp_imatrix_entry_at(const bp_imatrix *m, size_t i, bp_imatrix_entry *out);

/* Mean importance per input channel of a tensor, by Hugging Face or GGUF
 * name; *n (optional) receives the count. NULL (and *n = 0) if absent. */
const float *bp_imatrix_find(const bp_imatrix *m, const char *name, int64_t *n);

/* Name conversions (see the table above). Names not in the table are copied
 * unchanged. BP_EINVAL when out is NULL or cap too small (the result needs
 * at most strlen(name) + 32 bytes). */
int bp_imatrix_name_to_hf(const char *name, char *out, size_t cap);
int bp_imatrix_name_to_gguf(const char *name, char *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
