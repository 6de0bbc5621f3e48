/* bitplan: calibration input of a job — a token stream or a stats file —
 * and what is derived from it: the input Hessians of every linear layer and
 * the held-out windows on which KL is measured.
 *
 * The stream is split in two parts that never overlap:
 *   - Hessian sequences: the first n_seq sequences of ctx tokens;
 *   - KL windows: the evaluation windows (ctx + 1 tokens each) of the
 *     tokens after those sequences, so KL is measured on data the Hessians
 *     never saw.
 * The calibration id (a hash of the token stream's hash, ctx and n_seq) is
 * what plans record: `apply` and `eval` recompute it from their own inputs
 * and refuse a mismatch, so GPTQ weights are reproduced exactly. A stats
 * file (bp_hessian_save) carries the same three values and so the same id.
 */
#ifndef BITPLAN_CALIB_INPUT_H
#define BITPLAN_CALIB_INPUT_H

#include <stdint.h>

#include "bitplan/error.h"
#include "bitplan/hash.h"
#include "bitplan/hessian.h"
#include "bitplan/llama.h"
#include "bitplan/model.h"
#include "bitplan/tokens.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bp_calib_spec {
    const char *text_path;    /* byte-level text (token id = byte) */
    const char *tokens_path;  /* uint32 LE binary, or a JSON array if *.json */
    const char *stats_path;   /* stats file: loaded if it exists, else written */
    int64_t ctx;              /* tokens per Hessian sequence / KL window; 0 = 128 */
    int64_t n_seq;            /* Hessian sequences; 0 = 64 (fewer if the stream is short) */
    int64_t kl_windows;       /* KL windows; 0 = 16 */
    int diag_only;            /* 1: diagonal Hessians only */
    int quiet;
} bp_calib_spec;

void bp_calib_spec_default(bp_calib_spec *s);
/* 1 when any calibration input is given. */
int bp_calib_spec_given(const bp_calib_spec *s);

typedef struct bp_calib bp_calib;

/* Load the input and compute (or load) the Hessians for `llama`'s model.
 * need_tokens: the KL windows are needed (a stats file alone has no
 * tokens: BP_EINVAL explaining that --text/--tokens is required). Caller
 * owns *out. */
int bp_calib_open(const bp_calib_spec *spec, bp_llama *llama,
                  const char *model_hash, int need_tokens, bp_calib **out,
                  bp_error *err);
void bp_calib_destroy(bp_calib **c);

/* "blake2b256:..." identifying (stream hash, ctx, n_seq). */
const char *bp_calib_id(const bp_calib *c);
/* Human description for the plan: "text:calib.txt ctx=128 seqs=64". */
const char *bp_calib_source(const bp_calib *c);
const bp_hessian *bp_calib_hessian(const bp_calib *c);
/* The KL windows' tokens (a stream of kl_windows * ctx + 1 tokens) or NULL
 * when there are no tokens. */
const bp_tokens *bp_calib_kl_tokens(const bp_calib *c);
int64_t bp_calib_ctx(const bp_calib *c);

/* The Hessian of the input a weight multiplies, as a dense cols x cols
 * double matrix (full) or cols diagonal values (diag) in a new buffer the
 * caller frees. BP_ENOTFOUND when the weight has no collected input;
 * BP_EUNSUPPORTED for full on a diag-only calibration. */
int bp_calib_hessian_full(const bp_calib *c, const bp_llama_config *cfg,
                          const char *weight, int64_t cols, double **out,
                          bp_error *err);
int bp_calib_hessian_diag(const bp_calib *c, const bp_llama_config *cfg,
                          const char *weight, int64_t cols, double **out,
                          bp_error *err);

/* Load a token stream given as text (byte-level, needs vocab_size >= 256)
 * or as token ids (uint32 LE, or a JSON array when the name ends in
 * ".json"); exactly one of text_path and tokens_path. Caller owns *out. */
int bp_calib_load_tokens(const char *text_path, const char *tokens_path, int64_t vocab_size,
                         bp_tokens **out, bp_error *err);

/* The id a (stream hash, ctx, n_seq) triple gets; out holds
 * BP_HASH_HEX_LEN + 1 bytes. */
void bp_calib_make_id(const char *stream_hash, int64_t ctx, int64_t n_seq, char *out);

#ifdef __cplusplus
}
#endif
#endif
