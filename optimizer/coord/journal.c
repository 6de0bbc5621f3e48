/* bitplan coord: the append-only job journal (see include/bitplan/journal.h). */
#include "bitplan/journal.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bitplan/proto.h"
#include "bitplan/wire_check.h"
#include "coord_internal.h"

#define REC_MAGIC "BPJ1"
#define REC_HDR 12 /* magic + length + crc */

struct bp_journal {
    char path[PATH_MAX];
    int fd;
};

static const char *type_name(bp_jrec_type t)
{
    switch (t) {
    case BP_JREC_SUBMIT: return "submit";
    case BP_JREC_CANCEL: return "cancel";
    case BP_JREC_DONE: return "done";
    case BP_JREC_FAILED: return "failed";
    }
    return NULL;
}

static int job_id_ok(const char *job)
{
    size_t n = job ? strlen(job) : 0;
    if (n == 0 || n > BP_JOURNAL_MAX_JOB_ID)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = job[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.'))
            return 0;
    }
    return 1;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void pack_cstr(msgpack_packer *pk, const char *s, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

/* Encode a whole record (header + payload) into sb. */
static int encode(const bp_jrec *rec, msgpack_sbuffer *sb, bp_error *err)
{
    msgpack_sbuffer_init(sb); /* callers destroy it on every path */
    const char *tn = type_name(rec->type);
    if (!tn)
        return bp_error_set(err, BP_EINVAL, "journal: unknown record type %d", (int)rec->type);
    if (!job_id_ok(rec->job))
        return bp_error_set(err, BP_EINVAL, "journal: invalid job id");
    if (rec->text_len > BP_JOURNAL_MAX_RECORD - 256 || (rec->text_len && !rec->text))
        return bp_error_set(err, BP_EINVAL, "journal: record text of %zu bytes is too large",
                            rec->text_len);
    static const char zero[REC_HDR];
    msgpack_sbuffer_write(sb, zero, REC_HDR);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    pack_cstr(&pk, "r", 1);
    pack_cstr(&pk, tn, strlen(tn));
    pack_cstr(&pk, "job", 3);
    pack_cstr(&pk, rec->job, strlen(rec->job));
    pack_cstr(&pk, "t", 1);
    msgpack_pack_int64(&pk, rec->time_s ? rec->time_s : bp__wall_s());
    pack_cstr(&pk, "text", 4);
    pack_cstr(&pk, rec->text_len ? rec->text : "", rec->text_len);
    pack_cstr(&pk, "code", 4);
    msgpack_pack_int32(&pk, rec->code);
    if (!sb->data)
        return bp_error_set(err, BP_ENOMEM, "journal: out of memory");
    size_t plen = sb->size - REC_HDR;
    memcpy(sb->data, REC_MAGIC, 4);
    put_u32((unsigned char *)sb->data + 4, (uint32_t)plen);
    put_u32((unsigned char *)sb->data + 8, bp__crc32(sb->data + REC_HDR, plen));
    return BP_OK;
}

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return BP_EIO;
        p += w;
        len -= (size_t)w;
    }
    return BP_OK;
}

static int read_full(FILE *fp, void *buf, size_t len)
{
    return fread(buf, 1, len, fp) == len;
}

/* Decode one payload; 0 on success. text points into buf (NUL-terminated by
 * the caller's over-allocation). */
static int decode_payload(char *buf, size_t len, bp_jrec *rec, char *job, msgpack_unpacked *u)
{
    bp_wire_limits wl = {4, 64};
    if (bp_wire_check((const uint8_t *)buf, len, &wl, NULL) != BP_OK)
        return -1;
    size_t off = 0;
    if (msgpack_unpack_next(u, buf, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len)
        return -1;
    const msgpack_object *m = &u->data;
    bp_str r, jid, text;
    int64_t t = 0, code = 0;
    if (bp_mp_get_str(m, "r", &r, NULL) || bp_mp_get_str(m, "job", &jid, NULL) ||
        bp_mp_get_str(m, "text", &text, NULL) || bp_mp_get_i64(m, "t", &t, NULL) ||
        bp_mp_get_i64(m, "code", &code, NULL))
        return -1;
    if (code < INT32_MIN || code > INT32_MAX || jid.len == 0 || jid.len > BP_JOURNAL_MAX_JOB_ID)
        return -1;
    memcpy(job, jid.ptr, jid.len);
    job[jid.len] = '\0';
    if (!job_id_ok(job))
        return -1;
    memset(rec, 0, sizeof *rec);
    for (int ty = BP_JREC_SUBMIT; ty <= BP_JREC_FAILED; ty++) {
        const char *tn = type_name((bp_jrec_type)ty);
        if (strlen(tn) == r.len && !memcmp(tn, r.ptr, r.len))
            rec->type = (bp_jrec_type)ty;
    }
    if (!rec->type)
        return -1;
    rec->job = job;
    /* The text view points into buf; move it to the front so it can be
     * NUL-terminated without clobbering anything still needed. */
    memmove(buf, text.ptr, text.len);
    buf[text.len] = '\0';
    rec->text = buf;
    rec->text_len = text.len;
    rec->code = (int32_t)code;
    rec->time_s = t;
    return 0;
}

static int replay_fp(FILE *fp, const char *path, bp_journal_cb cb, void *ud,
                     bp_journal_replay_info *info, bp_error *err)
{
    memset(info, 0, sizeof *info);
    struct stat st;
    if (fstat(fileno(fp), &st) != 0)
        return bp_error_set(err, BP_EIO, "%s: %s", path, strerror(errno));
    uint64_t size = (uint64_t)st.st_size, pos = 0;
    char *buf = NULL;
    int rc = BP_OK;
    while (pos + REC_HDR <= size) {
        unsigned char hdr[REC_HDR];
        if (!read_full(fp, hdr, REC_HDR) || memcmp(hdr, REC_MAGIC, 4))
            break;
        uint32_t len = get_u32(hdr + 4), crc = get_u32(hdr + 8);
        if (len > BP_JOURNAL_MAX_RECORD || pos + REC_HDR + len > size)
            break;
        free(buf);
        buf = malloc((size_t)len + 1);
        if (!buf) {
            rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", path);
            goto out;
        }
        if (!read_full(fp, buf, len) || bp__crc32(buf, len) != crc)
            break;
        bp_jrec rec;
        char job[BP_JOURNAL_MAX_JOB_ID + 1];
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        int bad = decode_payload(buf, len, &rec, job, &u);
        msgpack_unpacked_destroy(&u);
        if (bad)
            break;
        if (cb && (rc = cb(ud, &rec, err)) != BP_OK)
            goto out;
        info->records++;
        pos += REC_HDR + len;
    }
    info->good_bytes = pos;
    info->torn_bytes = size - pos;
out:
    free(buf);
    return rc;
}

int bp_journal_replay(const char *path, bp_journal_cb cb, void *ud,
                      bp_journal_replay_info *info, bp_error *err)
{
    bp_journal_replay_info local;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return bp_error_set(err, errno == ENOENT ? BP_ENOTFOUND : BP_EIO, "%s: %s", path,
                            strerror(errno));
    int rc = replay_fp(fp, path, cb, ud, info ? info : &local, err);
    fclose(fp);
    return rc;
}

int bp_journal_open(const char *path, bp_journal_cb cb, void *ud, bp_journal **out,
                    bp_journal_replay_info *info, bp_error *err)
{
    *out = NULL;
    bp_journal_replay_info local;
    if (!info)
        info = &local;
    memset(info, 0, sizeof *info);
    if (strlen(path) >= PATH_MAX)
        return bp_error_set(err, BP_EINVAL, "journal path too long");
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return bp_error_set(err, BP_EIO, "%s: %s", path, strerror(errno));
    int dfd = dup(fd);
    FILE *fp = dfd >= 0 ? fdopen(dfd, "rb") : NULL;
    if (!fp) {
        if (dfd >= 0)
            close(dfd);
        close(fd);
        return bp_error_set(err, BP_EIO, "%s: %s", path, strerror(errno));
    }
    int rc = replay_fp(fp, path, cb, ud, info, err);
    fclose(fp);
    if (rc == BP_OK && info->torn_bytes) {
        if (ftruncate(fd, (off_t)info->good_bytes) != 0 || fsync(fd) != 0)
            rc = bp_error_set(err, BP_EIO, "%s: truncating a torn record: %s", path,
                              strerror(errno));
    }
    if (rc == BP_OK && lseek(fd, 0, SEEK_END) < 0)
        rc = bp_error_set(err, BP_EIO, "%s: %s", path, strerror(errno));
    bp_journal *j = NULL;
    if (rc == BP_OK && !(j = calloc(1, sizeof *j)))
        rc = bp_error_set(err, BP_ENOMEM, "journal: out of memory");
    if (rc != BP_OK || !j) {
        close(fd);
        return rc;
    }
    snprintf(j->path, sizeof j->path, "%s", path);
    j->fd = fd;
    *out = j;
    return BP_OK;
}

int bp_journal_append(bp_journal *j, const bp_jrec *rec, bp_error *err)
{
    msgpack_sbuffer sb;
    int rc = encode(rec, &sb, err);
    if (rc == BP_OK) {
        /* O_APPEND is not used: after a failed partial write we seek back
         * and truncate so the file never keeps half a record. */
        off_t at = lseek(j->fd, 0, SEEK_END);
        if (at < 0 || write_all(j->fd, sb.data, sb.size) != BP_OK || fsync(j->fd) != 0) {
            rc = bp_error_set(err, BP_EIO, "%s: append: %s", j->path, strerror(errno));
            if (at >= 0 && ftruncate(j->fd, at) == 0)
                (void)lseek(j->fd, at, SEEK_SET);
        }
    }
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

int bp_journal_rewrite(bp_journal *j, const bp_jrec *recs, size_t n, bp_error *err)
{
    char tmp[PATH_MAX + 16];
    snprintf(tmp, sizeof tmp, "%s.tmp", j->path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return bp_error_set(err, BP_EIO, "%s: %s", tmp, strerror(errno));
    int rc = BP_OK;
    for (size_t i = 0; i < n && rc == BP_OK; i++) {
        msgpack_sbuffer sb;
        rc = encode(&recs[i], &sb, err);
        if (rc == BP_OK && write_all(fd, sb.data, sb.size) != BP_OK)
            rc = bp_error_set(err, BP_EIO, "%s: %s", tmp, strerror(errno));
        msgpack_sbuffer_destroy(&sb);
    }
    if (rc == BP_OK && fsync(fd) != 0)
        rc = bp_error_set(err, BP_EIO, "%s: fsync: %s", tmp, strerror(errno));
    if (rc == BP_OK && rename(tmp, j->path) != 0)
        rc = bp_error_set(err, BP_EIO, "%s: rename: %s", tmp, strerror(errno));
    if (rc != BP_OK) {
        close(fd);
        unlink(tmp);
        return rc;
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", j->path);
    (void)bp__fsync_dir(dirname(dir));
    close(j->fd);
    j->fd = open(j->path, O_RDWR | O_CLOEXEC);
    if (j->fd < 0 || lseek(j->fd, 0, SEEK_END) < 0)
        return bp_error_set(err, BP_EIO, "%s: reopen: %s", j->path, strerror(errno));
    close(fd);
    return BP_OK;
}

void bp_journal_close(bp_journal **p)
{
    if (!p || !*p)
        return;
    if ((*p)->fd >= 0)
        close((*p)->fd);
    free(*p);
    *p = NULL;
}
