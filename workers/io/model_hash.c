/* Content hash of a model: config.json text, then every tensor in name
 * order. Each tensor is hashed on its own (in parallel) into a digest, and
 * the digests are hashed in order, so the result does not depend on the
 * thread count. The data is read straight from the mmap, so memory use is
 * bounded by the page cache, not the model size. */
#include <stdlib.h>
#include <string.h>

#include "bitplan/hash.h"
#include "io_internal.h"

/* Hash big tensors in pieces so a single update never covers gigabytes at
 * once (keeps progress even and the working set streaming). */
#define HASH_PIECE ((size_t)64 << 20) /* bytes */

static void hash_tensor(const bp_tensor_info *t, unsigned char out[BP_HASH_BYTES])
{
    bp_hash h;
    bp_hash_init(&h);
    bp_hash_update_str(&h, "bitplan-tensor-v1");
    bp_hash_update_str(&h, t->name);
    bp_hash_update_str(&h, bp_dtype_name(t->dtype));
    bp_hash_update_u64(&h, (uint64_t)t->ndim);
    for (int d = 0; d < t->ndim; d++)
        bp_hash_update_u64(&h, (uint64_t)t->shape[d]);
    bp_hash_update_u64(&h, t->nbytes);
    const unsigned char *p = t->data;
    for (uint64_t off = 0; off < t->nbytes; off += HASH_PIECE) {
        uint64_t left = t->nbytes - off;
        bp_hash_update(&h, p + off, (size_t)(left < HASH_PIECE ? left : HASH_PIECE));
    }
    bp_hash_final(&h, out);
}

int bp_model_content_hash(const bp_model *m, char *out, bp_error *err)
{
    if (!m || !out)
        return bp_error_set(err, BP_EINVAL, "bp_model_content_hash: NULL argument");
    size_t n = bp_model_count(m);
    unsigned char(*digests)[BP_HASH_BYTES] = malloc((n ? n : 1) * sizeof *digests);
    if (!digests)
        return bp_error_set(err, BP_ENOMEM, "%s: out of memory hashing %zu tensors",
                            bp_model_dir(m), n);
    /* Dynamic schedule: tensor sizes differ by 1000x (norms vs. embeddings). */
#pragma omp parallel for schedule(dynamic, 1)
    for (long i = 0; i < (long)n; i++)
        hash_tensor(bp_model_tensor(m, (size_t)i), digests[i]);

    bp_hash h;
    bp_hash_init(&h);
    bp_hash_update_str(&h, "bitplan-model-v1");
    bp_hash_update_str(&h, bp_model_config_text(m));
    bp_hash_update_u64(&h, (uint64_t)n);
    for (size_t i = 0; i < n; i++)
        bp_hash_update(&h, digests[i], BP_HASH_BYTES);
    unsigned char d[BP_HASH_BYTES];
    bp_hash_final(&h, d);
    bp_hash_to_hex(d, out);
    free(digests);
    return BP_OK;
}
