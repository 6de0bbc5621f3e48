/* bitplan: the coordinator's content-addressed task-result cache.
 *
 * Keyed by a task's input hash (bp_task_req.hash): the same inputs give the
 * same result, so a finished task never runs twice — not after a coordinator
 * restart, not when a job is submitted again. One file per hash:
 *
 *   DIR/<shard>/<name>   shard = first 2 hex digits of the hash,
 *                        name  = the hash with ':' replaced by '-'
 *
 *   offset 0   "BPCACHE1"
 *          8   u64 LE header length H
 *         16   header: msgpack map {"hash": str, "result": map,
 *                                   "bin": [{"name", "dtype", "count"}...]}
 *       16+H   the binary buffers, concatenated in "bin" order
 *     end-32   BLAKE2b-256 of every preceding byte
 *
 * Files are written atomically (tmp file in the same directory, fsync,
 * rename, fsync of the directory), so a reader sees a whole entry or none.
 * A file that fails any check (digest, structure, hash mismatch, sizes) is
 * treated as absent and removed, and the task is recomputed.
 */
#ifndef BITPLAN_CACHE_H
#define BITPLAN_CACHE_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "bitplan/error.h"
#include "bitplan/proto.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BP_CACHE_MAX_HASH 128                  /* bytes */
#define BP_CACHE_MAX_ENTRY ((uint64_t)1 << 30) /* bytes per file */

typedef struct bp_cache bp_cache;

/* A cache entry read back: result map and binary views point into buf and
 * the unpacked zone; valid until bp_cache_entry_clear. */
typedef struct bp_cache_entry {
    char *buf;
    size_t len;
    msgpack_unpacked unpacked;
    const msgpack_object *result;
    bp_bin_view bins[BP_PROTO_MAX_BIN];
    size_t n_bins;
} bp_cache_entry;

/* 1 if hash can be a cache key: 1..BP_CACHE_MAX_HASH bytes of
 * [A-Za-z0-9_.:-], not starting with '.', containing at least 2 hex digits
 * after its last ':' (or from its start). */
int bp_cache_hash_ok(const char *hash);

/* Open (mkdir -p) a cache rooted at dir. Caller owns *out. */
int bp_cache_open(const char *dir, bp_cache **out, bp_error *err);
void bp_cache_close(bp_cache **p);

/* Store a result (one msgpack map) and its binary buffers under hash,
 * atomically. Replaces an existing entry. BP_EINVAL for a bad hash or
 * result, BP_EIO on file errors. */
int bp_cache_put(bp_cache *c, const char *hash, const void *result_mp, size_t result_len,
                 const bp_bin_view *bins, size_t n_bins, bp_error *err);
/* Read the entry for hash into *e (which must be zero-initialised or
 * cleared). BP_ENOTFOUND if absent or corrupt (corrupt files are removed and
 * err says why). */
int bp_cache_get(bp_cache *c, const char *hash, bp_cache_entry *e, bp_error *err);
void bp_cache_entry_clear(bp_cache_entry *e);
/* The file path for hash (for tests and tools); BP_EINVAL for a bad hash. */
int bp_cache_path(const bp_cache *c, const char *hash, char *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
