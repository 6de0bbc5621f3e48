/* bitplan: the coordinator's append-only job journal (Titanic-style).
 *
 * One file, a sequence of records, each written with one write() and made
 * durable with fsync before the coordinator acknowledges what it records:
 *
 *   magic "BPJ1" | u32 LE payload length | u32 LE CRC-32 of payload | payload
 *
 * The payload is a msgpack map {"r": type, "job": id, "t": unix seconds,
 * "text": str, "code": int} (text: the spec for submit, the plan JSON for
 * done, the message for failed; code: a wire error code for failed).
 * Replay reads records in order and stops at the first one that is
 * incomplete or fails its checks — after a crash that can only be the last,
 * torn, record — and the journal is truncated there before appending again.
 * Task results do not go here; they go to the result cache (cache.h).
 */
#ifndef BITPLAN_JOURNAL_H
#define BITPLAN_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#include "bitplan/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BP_JOURNAL_MAX_RECORD ((size_t)16 << 20) /* payload bytes */
#define BP_JOURNAL_MAX_JOB_ID 64                 /* bytes, without NUL */

typedef enum bp_jrec_type {
    BP_JREC_SUBMIT = 1, /* text = job spec JSON */
    BP_JREC_CANCEL,     /* no text */
    BP_JREC_DONE,       /* text = result (plan JSON) */
    BP_JREC_FAILED,     /* text = error message, code = wire code */
} bp_jrec_type;

/* A record. For appends, pointers are borrowed; in replay callbacks they
 * point into a buffer valid only during the call (text is NUL-terminated
 * there, text_len excludes the NUL). */
typedef struct bp_jrec {
    bp_jrec_type type;
    const char *job;   /* NUL-terminated, 1..BP_JOURNAL_MAX_JOB_ID bytes */
    const char *text;  /* may be NULL when text_len == 0 */
    size_t text_len;
    int32_t code;
    int64_t time_s;    /* set by append when 0 */
} bp_jrec;

typedef int (*bp_journal_cb)(void *ud, const bp_jrec *rec, bp_error *err);

typedef struct bp_journal_replay_info {
    size_t records;       /* records delivered */
    uint64_t good_bytes;  /* length of the valid prefix */
    uint64_t torn_bytes;  /* bytes after it that were ignored (and truncated) */
} bp_journal_replay_info;

typedef struct bp_journal bp_journal;

/* Open (creating if needed) the journal at path: replay every valid record
 * through cb (may be NULL), truncate a torn tail, and make it ready for
 * appends. A callback error aborts the open with that error. info optional.
 * Caller owns *out (bp_journal_close). BP_OK, BP_EIO, BP_ENOMEM. */
int bp_journal_open(const char *path, bp_journal_cb cb, void *ud, bp_journal **out,
                    bp_journal_replay_info *info, bp_error *err);
/* Only read: replay without truncating or opening for append. */
int bp_journal_replay(const char *path, bp_journal_cb cb, void *ud,
                      bp_journal_replay_info *info, bp_error *err);
/* Append one record and fsync. BP_EINVAL for an invalid record (bad job id,
 * text over BP_JOURNAL_MAX_RECORD), BP_EIO on a write/fsync failure. */
int bp_journal_append(bp_journal *j, const bp_jrec *rec, bp_error *err);
/* Replace the journal with exactly recs[0..n) (tmp + fsync + rename + fsync
 * of the directory), then keep appending to the new file. Used to compact
 * away jobs that were evicted. */
int bp_journal_rewrite(bp_journal *j, const bp_jrec *recs, size_t n, bp_error *err);
void bp_journal_close(bp_journal **p);

#ifdef __cplusplus
}
#endif
#endif
