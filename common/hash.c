#include "bitplan/hash.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

_Static_assert(sizeof(crypto_generichash_state) <= sizeof(((bp_hash *)0)->state),
               "bp_hash state too small for crypto_generichash_state");

static crypto_generichash_state *st(bp_hash *h)
{
    return (crypto_generichash_state *)(void *)h->state;
}

void bp_hash_init(bp_hash *h)
{
    /* sodium_init is idempotent and thread-safe; the generic hash does not
     * need it, but calling it keeps libsodium's CPU feature probe honest. */
    if (sodium_init() < 0) {
        /* Only fails if the OS has no randomness source; the hash still works. */
    }
    crypto_generichash_init(st(h), NULL, 0, BP_HASH_BYTES);
}

void bp_hash_update(bp_hash *h, const void *data, size_t len)
{
    crypto_generichash_update(st(h), (const unsigned char *)data, len);
}

void bp_hash_update_u64(bp_hash *h, uint64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    bp_hash_update(h, b, 8);
}

void bp_hash_update_str(bp_hash *h, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    bp_hash_update_u64(h, n);
    if (n)
        bp_hash_update(h, s, n);
}

void bp_hash_final(bp_hash *h, unsigned char out[BP_HASH_BYTES])
{
    crypto_generichash_final(st(h), out, BP_HASH_BYTES);
}

void bp_hash_to_hex(const unsigned char digest[BP_HASH_BYTES], char *out)
{
    static const char hex[] = "0123456789abcdef";
    memcpy(out, "blake2b256:", 11);
    for (int i = 0; i < BP_HASH_BYTES; i++) {
        out[11 + 2 * i] = hex[digest[i] >> 4];
        out[12 + 2 * i] = hex[digest[i] & 15];
    }
    out[BP_HASH_HEX_LEN] = '\0';
}

void bp_hash_final_hex(bp_hash *h, char *out)
{
    unsigned char d[BP_HASH_BYTES];
    bp_hash_final(h, d);
    bp_hash_to_hex(d, out);
}

void bp_hash_buffer_hex(const void *data, size_t len, char *out)
{
    bp_hash h;
    bp_hash_init(&h);
    bp_hash_update(&h, data, len);
    bp_hash_final_hex(&h, out);
}
