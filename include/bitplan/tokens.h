/* bitplan: token streams for calibration and evaluation.
 *
 * Three sources, all producing uint32 token ids:
 *   - binary: little-endian uint32 ids, file size a multiple of 4;
 *   - JSON:   one array of non-negative integers, e.g. [1, 15043, 29892];
 *   - text:   raw bytes for byte-level models, id = byte value (needs
 *             vocab_size >= 256).
 * Empty streams are rejected. Ids are checked against a model's vocabulary
 * where they are used (bp_tokens_check), so one stream can be loaded before
 * the model is known.
 *
 * Every stream carries a content hash of its ids, independent of the source
 * format: BLAKE2b-256 over the string "bitplan.tokens.v1", the count as
 * u64, then every id as 4 little-endian bytes (see bitplan/hash.h for the
 * length prefixes). Printed as "blake2b256:<hex>".
 */
#ifndef BITPLAN_TOKENS_H
#define BITPLAN_TOKENS_H

#include <stddef.h>
#include <stdint.h>

#include "bitplan/error.h"
#include "bitplan/hash.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bp_tokens bp_tokens;

/* Load a stream. Every error names the file: unreadable -> BP_EIO or
 * BP_ENOTFOUND; bad size, bad JSON, a negative, fractional or too-large id
 * (with its array index) -> BP_EFORMAT. Caller owns *out. */
int bp_tokens_load_bin(const char *path, bp_tokens **out, bp_error *err);
int bp_tokens_load_json(const char *path, bp_tokens **out, bp_error *err);
/* vocab_size < 256 -> BP_EUNSUPPORTED (byte ids would not fit). */
int bp_tokens_load_text(const char *path, int64_t vocab_size, bp_tokens **out,
                        bp_error *err);
/* Copy n ids from memory. `source` names the stream in messages (copied;
 * NULL = "<memory>"). */
int bp_tokens_from_array(const uint32_t *ids, int64_t n, const char *source,
                         bp_tokens **out, bp_error *err);
void bp_tokens_destroy(bp_tokens **t);

int64_t bp_tokens_count(const bp_tokens *t);
/* The ids; valid while t lives. */
const uint32_t *bp_tokens_data(const bp_tokens *t);
/* Where the stream came from (the path), for messages. */
const char *bp_tokens_source(const bp_tokens *t);
/* "blake2b256:<64 hex>", see above; valid while t lives. */
const char *bp_tokens_hash(const bp_tokens *t);

/* Every id in positions [first, first+n) < vocab_size; else BP_EINVAL
 * naming the source, the position and the id. */
int bp_tokens_check(const bp_tokens *t, int64_t vocab_size, int64_t first,
                    int64_t n, bp_error *err);

/* Split into non-overlapping sequences of ctx tokens (sequence s is
 * positions [s*ctx, s*ctx+ctx); a partial tail is dropped). max_sequences
 * 0 = all that fit; more than fit -> BP_EINVAL naming the source and the
 * counts. ctx < 1 or a stream shorter than ctx -> BP_EINVAL. */
int bp_tokens_split(const bp_tokens *t, int64_t ctx, int64_t max_sequences,
                    int64_t *n_sequences, bp_error *err);

#ifdef __cplusplus
}
#endif
#endif
