/* bitplan coord: small shared helpers (hash map, clocks, CRC, fsync). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bitplan/error.h"
#include "coord_internal.h"

void bp__u64map_init(bp__u64map *m)
{
    memset(m, 0, sizeof *m);
}

void bp__u64map_free(bp__u64map *m)
{
    free(m->keys);
    free(m->vals);
    bp__u64map_init(m);
}

static size_t slot_of(uint64_t key, size_t cap)
{
    /* splitmix64 finaliser: task ids are sequential, spread them. */
    key ^= key >> 30;
    key *= 0xbf58476d1ce4e5b9ULL;
    key ^= key >> 27;
    key *= 0x94d049bb133111ebULL;
    key ^= key >> 31;
    return (size_t)key & (cap - 1);
}

void *bp__u64map_get(const bp__u64map *m, uint64_t key)
{
    if (!m->cap || !key)
        return NULL;
    for (size_t i = slot_of(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
        if (m->keys[i] == key)
            return m->vals[i];
        if (m->keys[i] == 0)
            return NULL;
    }
}

static int grow(bp__u64map *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 64;
    uint64_t *nk = calloc(ncap, sizeof *nk);
    void **nv = calloc(ncap, sizeof *nv);
    if (!nk || !nv) {
        free(nk);
        free(nv);
        return BP_ENOMEM;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->keys[i])
            continue;
        size_t j = slot_of(m->keys[i], ncap);
        while (nk[j])
            j = (j + 1) & (ncap - 1);
        nk[j] = m->keys[i];
        nv[j] = m->vals[i];
    }
    free(m->keys);
    free(m->vals);
    m->keys = nk;
    m->vals = nv;
    m->cap = ncap;
    return BP_OK;
}

int bp__u64map_put(bp__u64map *m, uint64_t key, void *val)
{
    if (!key)
        return BP_EINVAL;
    if ((m->n + 1) * 4 > m->cap * 3) { /* load factor <= 3/4 */
        int rc = grow(m);
        if (rc)
            return rc;
    }
    size_t i = slot_of(key, m->cap);
    while (m->keys[i] && m->keys[i] != key)
        i = (i + 1) & (m->cap - 1);
    if (!m->keys[i])
        m->n++;
    m->keys[i] = key;
    m->vals[i] = val;
    return BP_OK;
}

void *bp__u64map_del(bp__u64map *m, uint64_t key)
{
    if (!m->cap || !key)
        return NULL;
    size_t mask = m->cap - 1, i = slot_of(key, m->cap);
    while (m->keys[i] != key) {
        if (!m->keys[i])
            return NULL;
        i = (i + 1) & mask;
    }
    void *old = m->vals[i];
    /* Backward-shift: move later entries of the probe run into the hole. */
    size_t hole = i;
    for (size_t j = (i + 1) & mask; m->keys[j]; j = (j + 1) & mask) {
        size_t home = slot_of(m->keys[j], m->cap);
        /* Entry j may move to hole if hole lies cyclically in [home, j). */
        int movable = hole <= j ? (home <= hole || home > j) : (home <= hole && home > j);
        if (movable) {
            m->keys[hole] = m->keys[j];
            m->vals[hole] = m->vals[j];
            hole = j;
        }
    }
    m->keys[hole] = 0;
    m->vals[hole] = NULL;
    m->n--;
    return old;
}

int bp__u64map_next(const bp__u64map *m, size_t *pos, uint64_t *key, void **val)
{
    while (*pos < m->cap) {
        size_t i = (*pos)++;
        if (m->keys[i]) {
            if (key)
                *key = m->keys[i];
            if (val)
                *val = m->vals[i];
            return 1;
        }
    }
    return 0;
}

int64_t bp__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t bp__wall_s(void)
{
    return (int64_t)time(NULL);
}

uint32_t bp__crc32(const void *data, size_t len)
{
    static uint32_t table[256];
    static int ready; /* benign: every thread computes the same table */
    if (!ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        ready = 1;
    }
    const unsigned char *p = data;
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < len; i++)
        c = table[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

int bp__fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return BP_EIO;
    int rc = fsync(fd) == 0 || errno == EINVAL ? BP_OK : BP_EIO;
    close(fd);
    return rc;
}
