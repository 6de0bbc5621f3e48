/* bitplan coord: helpers shared between the module's files (not public). */
#ifndef BITPLAN_COORD_INTERNAL_H
#define BITPLAN_COORD_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* An open-addressing map uint64 -> pointer (linear probing, backward-shift
 * deletion, so no tombstones accumulate). Key 0 is reserved (never stored). */
typedef struct bp__u64map {
    uint64_t *keys;
    void **vals;
    size_t cap;   /* power of two, or 0 */
    size_t n;
} bp__u64map;

void bp__u64map_init(bp__u64map *m);
void bp__u64map_free(bp__u64map *m);
void *bp__u64map_get(const bp__u64map *m, uint64_t key);
/* Insert or replace. BP_OK, BP_EINVAL (key 0) or BP_ENOMEM. */
int bp__u64map_put(bp__u64map *m, uint64_t key, void *val);
/* Remove; returns the old value or NULL. */
void *bp__u64map_del(bp__u64map *m, uint64_t key);
/* Iterate: start with *pos = 0; returns 0 at the end. Do not modify the map
 * while iterating. */
int bp__u64map_next(const bp__u64map *m, size_t *pos, uint64_t *key, void **val);

/* Monotonic clock in milliseconds. */
int64_t bp__now_ms(void);
/* Wall clock, seconds since the epoch. */
int64_t bp__wall_s(void);

/* CRC-32 (IEEE 802.3), for journal record framing. */
uint32_t bp__crc32(const void *data, size_t len);

/* fsync a directory (after a rename into it). BP_OK or BP_EIO. */
int bp__fsync_dir(const char *dir);

#endif
