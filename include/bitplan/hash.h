/* bitplan: content hashes (BLAKE2b-256 through libsodium).
 *
 * Hashes identify a model's content, a calibration input and a work unit's
 * inputs (for the result cache). They print as "blake2b256:<64 hex>".
 */
#ifndef BITPLAN_HASH_H
#define BITPLAN_HASH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BP_HASH_BYTES 32
#define BP_HASH_HEX_LEN (11 + 2 * BP_HASH_BYTES) /* "blake2b256:" + hex */

typedef struct bp_hash {
    _Alignas(64) unsigned char state[384]; /* crypto_generichash_state, opaque here */
} bp_hash;

void bp_hash_init(bp_hash *h);
void bp_hash_update(bp_hash *h, const void *data, size_t len);
/* Length-prefixed string, so ("ab","c") and ("a","bc") differ. */
void bp_hash_update_str(bp_hash *h, const char *s);
void bp_hash_update_u64(bp_hash *h, uint64_t v);
void bp_hash_final(bp_hash *h, unsigned char out[BP_HASH_BYTES]);
/* out must hold BP_HASH_HEX_LEN + 1 bytes. */
void bp_hash_final_hex(bp_hash *h, char *out);
void bp_hash_to_hex(const unsigned char digest[BP_HASH_BYTES], char *out);

/* One-shot hash of a buffer, as hex. */
void bp_hash_buffer_hex(const void *data, size_t len, char *out);

#ifdef __cplusplus
}
#endif
#endif
