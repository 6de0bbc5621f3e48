/* bitplan: the coordinator/worker/client message layer (protocol version 1).
 *
 * A message is a ZeroMQ multipart message. Frame 0 is a msgpack map, the
 * header: {"v": 1, "t": "<type>", "id": <uint64>, ...type fields...,
 * "bin": [{"name", "dtype", "count"}, ...]}. Frames 1..n are raw
 * little-endian arrays, one per "bin" entry, in order. docs/protocol.md is the
 * specification; this header is the C binding.
 *
 * Decoding untrusted frames (bp_proto_decode) runs three stages: the
 * structural pre-validator (wire_check.h), msgpack_unpack_next (must return
 * SUCCESS and consume the whole frame), then the schema check for the message
 * type. Every failure is BP_EPROTO with a message naming the field; nothing on
 * that path asserts or aborts.
 *
 * Lifetimes: every bp_str and every binary-frame view in a decoded bp_msg
 * points into the caller's frames; every msgpack_object* points into the
 * message's own msgpack zone. Both stay valid while the frames AND the bp_msg
 * live (until bp_msg_clear/bp_msg_destroy or the next decode into it).
 * Strings are NOT NUL-terminated; use .len.
 *
 * Threading: no global state; a bp_msg, bp_proto_out or bp_proto_in is used
 * by one thread at a time. ZeroMQ sockets follow ZeroMQ's rules (one thread).
 */
#ifndef BITPLAN_PROTO_H
#define BITPLAN_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>
#include <zmq.h>

#include "bitplan/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BP_PROTO_VERSION 1

/* Compile-time ceilings; the run-time bp_proto_limits may only lower them. */
#define BP_PROTO_MAX_BIN 16      /* binary frames per message */
#define BP_PROTO_MAX_ENVELOPE 4  /* routing-id frames the socket layer strips */
#define BP_PROTO_MAX_ROUTING_ID 255 /* bytes in one envelope frame */
#define BP_PROTO_MAX_USER_ID 64     /* bytes of a connection's ZAP User-Id (a Z85 key is 40) */

/* Defaults used when a bp_proto_limits field is 0 (or the pointer is NULL). */
#define BP_PROTO_DEF_MAX_HEADER_BYTES ((size_t)8 << 20)   /* frame 0 */
#define BP_PROTO_DEF_MAX_FRAME_BYTES ((size_t)64 << 20)   /* each binary frame */
#define BP_PROTO_DEF_MAX_BIN_FRAMES 16
#define BP_PROTO_DEF_MAX_NAME_BYTES 256                   /* ids, names, hash */
#define BP_PROTO_DEF_MAX_TEXT_BYTES 4096                  /* error messages */
#define BP_PROTO_DEF_MAX_JOB_SPEC_BYTES ((size_t)1 << 20) /* submit.job */
#define BP_PROTO_DEF_MAX_PLAN_BYTES ((size_t)4 << 20)     /* result_reply.plan */
#define BP_PROTO_DEF_MAX_JOBS 10000                       /* jobs_reply.jobs */
#define BP_PROTO_DEF_MAX_DEPTH 8
#define BP_PROTO_DEF_MAX_NODES 131072

/* Who may send a message type; bitmask for bp_proto_limits.accept. */
#define BP_PROTO_FROM_CLIENT 1u
#define BP_PROTO_FROM_COORDINATOR 2u
#define BP_PROTO_FROM_WORKER 4u

typedef struct bp_proto_limits {
    size_t max_header_bytes;   /* frame 0 */
    size_t max_frame_bytes;    /* each binary frame */
    size_t max_bin_frames;     /* <= BP_PROTO_MAX_BIN */
    size_t max_name_bytes;     /* job ids, worker names, hashes */
    size_t max_text_bytes;     /* error / failure messages */
    size_t max_job_spec_bytes; /* submit.job */
    size_t max_plan_bytes;     /* result_reply.plan */
    size_t max_jobs;           /* entries in jobs_reply.jobs */
    int max_depth;             /* msgpack nesting, <= 64 */
    size_t max_nodes;          /* msgpack objects in frame 0 */
    unsigned accept;           /* BP_PROTO_FROM_* mask of accepted senders; 0 = all */
    bool allow_nonfinite_bin;  /* false: f32/f64 frames must hold finite values */
} bp_proto_limits;

/* Fill *lim with the defaults above (accept = 0, allow_nonfinite_bin = false). */
void bp_proto_limits_default(bp_proto_limits *lim);

/* One frame of a multipart message: a borrowed byte range. */
typedef struct bp_frame {
    const void *data;
    size_t size; /* bytes */
} bp_frame;

/* A borrowed, NOT NUL-terminated string. ptr == NULL means "absent/nil". */
typedef struct bp_str {
    const char *ptr;
    size_t len; /* bytes */
} bp_str;

/* View of a NUL-terminated C string (NULL gives a nil bp_str). */
bp_str bp_str_c(const char *s);

typedef enum bp_wire_dtype {
    BP_WIRE_F32 = 1,
    BP_WIRE_F64,
    BP_WIRE_U8,
    BP_WIRE_U16,
    BP_WIRE_I64,
} bp_wire_dtype;

/* Bytes per element (4, 8, 1, 2, 8), or 0 for an unknown dtype. */
size_t bp_wire_dtype_size(bp_wire_dtype d);
/* "f32", "f64", "u8", "u16", "i64"; "?" for an unknown dtype. */
const char *bp_wire_dtype_name(bp_wire_dtype d);

/* A binary frame: declared in the header's "bin" list, carried as its own
 * frame. Decoded views borrow the caller's frame; for encoding, data/size are
 * borrowed from the caller and must stay valid until the message is sent.
 * size == count * bp_wire_dtype_size(dtype) always. data may be unaligned:
 * copy out with memcpy or bp_proto_bin_copy(). */
typedef struct bp_bin_view {
    bp_str name;         /* 1..64 bytes of [A-Za-z0-9_.-], unique per message */
    bp_wire_dtype dtype;
    uint64_t count;      /* elements */
    const void *data;    /* little-endian elements */
    size_t size;         /* bytes */
} bp_bin_view;

typedef enum bp_msg_type {
    BP_MSG_NONE = 0,
    /* client -> coordinator */
    BP_MSG_SUBMIT,
    BP_MSG_STATUS,
    BP_MSG_RESULT,
    BP_MSG_CANCEL,
    BP_MSG_JOBS,
    /* coordinator -> client */
    BP_MSG_SUBMITTED,
    BP_MSG_STATUS_REPLY,
    BP_MSG_RESULT_REPLY,
    BP_MSG_JOBS_REPLY,
    BP_MSG_OK,
    BP_MSG_ERROR,
    /* worker -> coordinator */
    BP_MSG_READY,
    BP_MSG_HEARTBEAT,
    BP_MSG_TASK_RESULT,
    BP_MSG_TASK_FAILED,
    /* worker <-> coordinator */
    BP_MSG_DISCONNECT,
    /* coordinator -> worker */
    BP_MSG_WELCOME,
    BP_MSG_TASK,
    BP_MSG_TYPE_COUNT
} bp_msg_type;

/* Wire name ("status_reply"), or "?" for BP_MSG_NONE / out of range. */
const char *bp_msg_type_name(bp_msg_type t);
/* BP_PROTO_FROM_* mask of the senders allowed to send t (0 for NONE). */
unsigned bp_msg_type_senders(bp_msg_type t);

/* submit (job = job spec JSON text), status, result, cancel, submitted
 * (job = job id). */
typedef struct bp_msg_job_ref {
    bp_str job;
} bp_msg_job_ref;

typedef struct bp_msg_status_reply {
    bp_str job;
    bp_str state;        /* [a-z0-9_], 1..32 bytes */
    uint64_t done;       /* work units finished, <= total */
    uint64_t total;
    double progress;     /* [0, 1] */
    bool has_eta;
    double eta_s;        /* seconds, >= 0; valid if has_eta */
    bool has_error_code;
    int32_t error_code;  /* wire code; valid if has_error_code */
    bp_str error;        /* ptr NULL: nil */
} bp_msg_status_reply;

typedef struct bp_proto_job_entry {
    bp_str job;
    bp_str state;
    uint64_t done;
    uint64_t total;
} bp_proto_job_entry;

/* A message: decoded (views into frames + own zone) or filled by the caller
 * for bp_proto_encode. Use the union member named after .type. */
typedef struct bp_msg {
    bp_msg_type type;
    uint32_t version;  /* BP_PROTO_VERSION */
    uint64_t id;       /* request id; replies echo the request's id */
    bool has_id;       /* after a failed decode: id was read before the failure */
    union {
        bp_msg_job_ref submit, status, result, cancel, submitted;
        bp_msg_status_reply status_reply;
        struct { bp_str job; bp_str plan; } result_reply;   /* plan: JSON text */
        struct { const bp_proto_job_entry *jobs; size_t n_jobs; } jobs_reply;
        struct { int32_t code; bp_str message; } error;      /* code: wire code != 0 */
        struct { bp_str worker; uint64_t threads; uint64_t pid; } ready;
        struct { uint64_t progress; bool has_task; uint64_t task; } heartbeat;
        struct { uint64_t task; bp_str hash; const msgpack_object *result; } task_result;
        struct { uint64_t task; int32_t code; bp_str message; } task_failed;
        struct { uint64_t heartbeat_ms; uint64_t liveness; } welcome;
        struct {
            uint64_t task;
            bp_str kind;                 /* [a-z0-9_], 1..32 bytes */
            const msgpack_object *params; /* a map */
            uint64_t deadline_ms;        /* relative budget; 0 = none */
        } task;
    } u;
    size_t n_bin;
    bp_bin_view bin[BP_PROTO_MAX_BIN];

    /* Private: the decoded header's zone and decoder-owned arrays. */
    msgpack_unpacked priv_unpacked;
    void *priv_alloc;
} bp_msg;

/* Make *m empty (no resources). A zero-initialised bp_msg is also empty. */
void bp_msg_init(bp_msg *m);
/* Release what a decode left in *m and make it empty. Safe on an empty msg. */
void bp_msg_clear(bp_msg *m);
/* Heap-allocated empty message; *out NULL on failure (BP_ENOMEM). */
int bp_msg_new(bp_msg **out);
/* Clear and free *p, set *p = NULL. Safe on NULL and twice. */
void bp_msg_destroy(bp_msg **p);

/* Decode one message (envelope already stripped). frames[0] is the header.
 * *out must be empty or a previously decoded message; it is cleared first.
 * lim NULL: defaults. Returns BP_OK, BP_EPROTO (hostile/malformed input;
 * out is left empty except out->id/has_id), BP_EINVAL (NULL out) or
 * BP_ENOMEM. Never aborts on any input. */
int bp_proto_decode(const bp_frame *frames, size_t n, const bp_proto_limits *lim,
                    bp_msg *out, bp_error *err);

/* Find a decoded binary frame by name; NULL if absent. */
const bp_bin_view *bp_msg_find_bin(const bp_msg *m, const char *name);

/* Copy a binary frame's elements to dst (which holds dst_bytes bytes),
 * requiring an exact dtype and dst_bytes == view->size. Returns BP_OK or
 * BP_EMISMATCH. Little-endian hosts only (checked at compile time). */
int bp_proto_bin_copy(const bp_bin_view *v, bp_wire_dtype dtype, void *dst,
                      size_t dst_bytes, bp_error *err);

/* ---- Encoding --------------------------------------------------------- */

/* An encoded message ready to send: the header (owned) and borrowed binary
 * frames (their data must outlive the send). Reusable: each encode replaces
 * the previous content. */
typedef struct bp_proto_out {
    msgpack_sbuffer header; /* owned */
    size_t n_bin;
    bp_frame bin[BP_PROTO_MAX_BIN]; /* borrowed */
    bp_proto_limits limits;
} bp_proto_out;

/* lim NULL: defaults. Encoders check their output against these limits. */
void bp_proto_out_init(bp_proto_out *out, const bp_proto_limits *lim);
/* Free the header buffer; out is then empty (init again to reuse). */
void bp_proto_out_clear(bp_proto_out *out);
/* Frame list (header then binary frames) into frames[cap]; returns the
 * number of frames (1 + n_bin), or 0 if cap is too small or nothing encoded. */
size_t bp_proto_out_frames(const bp_proto_out *out, bp_frame *frames, size_t cap);

/* Generic encoder: encodes msg->type with msg->id and the type's union
 * member (and msg->bin[0..n_bin) for task/task_result). task.params and
 * task_result.result may be NULL (empty map). The output is then decoded with
 * out->limits as a self-check, so anything an encoder accepts the decoder
 * accepts. Returns BP_OK, BP_EINVAL (a field is out of schema or a limit; the
 * message names it) or BP_ENOMEM. On failure out holds no message. */
int bp_proto_encode(bp_proto_out *out, const bp_msg *msg, bp_error *err);

/* Per-type encoders. String arguments are views (bp_str_c for C strings).
 * params_mp/result_mp: ONE pre-encoded msgpack map (e.g. packed by the task
 * layer with msgpack_pack_map), copied into the header; NULL/0 = {}.
 * code arguments are wire codes (bp_proto_wire_code). Same returns as
 * bp_proto_encode. */
int bp_proto_encode_submit(bp_proto_out *out, uint64_t id, bp_str job_spec, bp_error *err);
int bp_proto_encode_status(bp_proto_out *out, uint64_t id, bp_str job, bp_error *err);
int bp_proto_encode_result(bp_proto_out *out, uint64_t id, bp_str job, bp_error *err);
int bp_proto_encode_cancel(bp_proto_out *out, uint64_t id, bp_str job, bp_error *err);
int bp_proto_encode_jobs(bp_proto_out *out, uint64_t id, bp_error *err);
int bp_proto_encode_submitted(bp_proto_out *out, uint64_t id, bp_str job, bp_error *err);
int bp_proto_encode_status_reply(bp_proto_out *out, uint64_t id,
                                 const bp_msg_status_reply *st, bp_error *err);
int bp_proto_encode_result_reply(bp_proto_out *out, uint64_t id, bp_str job, bp_str plan,
                                 bp_error *err);
int bp_proto_encode_jobs_reply(bp_proto_out *out, uint64_t id, const bp_proto_job_entry *jobs,
                               size_t n_jobs, bp_error *err);
int bp_proto_encode_ok(bp_proto_out *out, uint64_t id, bp_error *err);
int bp_proto_encode_error(bp_proto_out *out, uint64_t id, int32_t code, bp_str message,
                          bp_error *err);
int bp_proto_encode_ready(bp_proto_out *out, uint64_t id, bp_str worker, uint64_t threads,
                          uint64_t pid, bp_error *err);
/* task NULL: nil (idle). */
int bp_proto_encode_heartbeat(bp_proto_out *out, uint64_t id, uint64_t progress,
                              const uint64_t *task, bp_error *err);
int bp_proto_encode_task_result(bp_proto_out *out, uint64_t id, uint64_t task, bp_str hash,
                                const void *result_mp, size_t result_mp_len,
                                const bp_bin_view *bins, size_t n_bins, bp_error *err);
int bp_proto_encode_task_failed(bp_proto_out *out, uint64_t id, uint64_t task, int32_t code,
                                bp_str message, bp_error *err);
int bp_proto_encode_disconnect(bp_proto_out *out, uint64_t id, bp_error *err);
int bp_proto_encode_welcome(bp_proto_out *out, uint64_t id, uint64_t heartbeat_ms,
                            uint64_t liveness, bp_error *err);
int bp_proto_encode_task(bp_proto_out *out, uint64_t id, uint64_t task, bp_str kind,
                         const void *params_mp, size_t params_mp_len, uint64_t deadline_ms,
                         const bp_bin_view *bins, size_t n_bins, bp_error *err);

/* ---- Error codes on the wire ------------------------------------------ */

/* bp error code (BP_OK, BP_E*) -> stable wire code (table in
 * docs/protocol.md); unknown codes -> 99 ("internal"). */
int32_t bp_proto_wire_code(int bp_code);
/* Wire code -> bp code; unknown wire codes -> BP_EIO. */
int bp_proto_bp_code(int32_t wire_code);
/* Wire code -> its name ("not_found"); "unknown" if not in the table. */
const char *bp_proto_wire_code_name(int32_t wire_code);

/* ---- ZeroMQ transport ------------------------------------------------- */

/* Set ZMQ_MAXMSGSIZE (the larger of the header and binary frame limits) and
 * ZMQ_LINGER 0 on a socket. Call before zmq_bind/zmq_connect. Note that
 * ZMQ_MAXMSGSIZE is enforced by stream transports (tcp, ipc) only, not
 * inproc; bp_proto_recv checks frame sizes itself on every transport.
 * Returns BP_OK or BP_EIO. */
int bp_proto_socket_limits(void *sock, const bp_proto_limits *lim, bp_error *err);

/* Send envelope[0..n_envelope) (routing ids; n_envelope 0 for a DEALER) and
 * then out's frames, every part with ZMQ_DONTWAIT, so this never blocks.
 * Binary frames are copied by ZeroMQ (zmq_send). Returns BP_OK;
 * BP_ETIMEOUT on EAGAIN (peer at its high-water mark or not yet connected:
 * retry later or drop); BP_ENOTFOUND on EHOSTUNREACH (ROUTER_MANDATORY and
 * the routing id is unknown or gone); BP_EINVAL for an empty out or too many
 * envelope frames; BP_EIO for any other ZeroMQ error. */
int bp_proto_send(void *sock, const bp_frame *envelope, size_t n_envelope,
                  const bp_proto_out *out, bp_error *err);

/* A received multipart message: owns its zmq_msg_t parts. */
typedef struct bp_proto_in {
    zmq_msg_t part[BP_PROTO_MAX_ENVELOPE + 1 + BP_PROTO_MAX_BIN];
    size_t n_part;                          /* initialised parts */
    bp_frame envelope[BP_PROTO_MAX_ENVELOPE];
    size_t n_envelope;                      /* routing frames received */
    bp_frame body[1 + BP_PROTO_MAX_BIN];    /* pass to bp_proto_decode */
    size_t n_body;
    /* The ZAP User-Id of the connection the message came from (with the
     * coordinator's CURVE handler: the sender's Z85 public key); "" when
     * the connection has none (no ZAP handler, no security). */
    char user_id[BP_PROTO_MAX_USER_ID + 1];
} bp_proto_in;

void bp_proto_in_init(bp_proto_in *in);
/* Close all parts; in is then empty. Safe on an empty in. */
void bp_proto_in_clear(bp_proto_in *in);

/* Receive one multipart message. The first n_envelope frames
 * (<= BP_PROTO_MAX_ENVELOPE; 1 on a ROUTER fed by DEALERs, 0 on a DEALER)
 * are routing frames of at most BP_PROTO_MAX_ROUTING_ID bytes; the rest is
 * the body, at most 1 + lim->max_bin_frames frames, frame 0 at most
 * max_header_bytes and each other frame at most max_frame_bytes. A message
 * breaking these is received in full, discarded, and reported as BP_EPROTO;
 * in->envelope still holds its routing frames when they were valid, so the
 * caller can answer (e.g. with disconnect), and in->user_id holds the
 * sender's User-Id, so the caller can tell who sent the bad message. A
 * User-Id longer than BP_PROTO_MAX_USER_ID is itself a violation (user_id
 * is then ""). flags: 0 or ZMQ_DONTWAIT for the
 * first frame; later parts of a message are always already queued.
 * *in is cleared first. Returns BP_OK, BP_ETIMEOUT (EAGAIN: nothing queued),
 * BP_EPROTO, BP_EINVAL or BP_EIO. */
int bp_proto_recv(void *sock, size_t n_envelope, const bp_proto_limits *lim, int flags,
                  bp_proto_in *in, bp_error *err);

/* ---- Opaque-map accessors (task params, task results) ----------------- */

/* The value for key in a msgpack map (keys compared as exact byte strings).
 * NULL if map is not a map, the key is absent, or the key occurs more than
 * once (ambiguous). */
const msgpack_object *bp_mp_get(const msgpack_object *map, const char *key);

/* Typed getters. Return BP_OK; BP_ENOTFOUND if the key is absent (or the
 * value is nil) so callers can apply defaults; BP_EPROTO if map is not a
 * map, the key is duplicated or the value has the wrong type or range. The
 * error message names the key. */
int bp_mp_get_str(const msgpack_object *map, const char *key, bp_str *out, bp_error *err);
int bp_mp_get_u64(const msgpack_object *map, const char *key, uint64_t *out, bp_error *err);
int bp_mp_get_i64(const msgpack_object *map, const char *key, int64_t *out, bp_error *err);
/* Accepts float32, float64 and integers; the value must be finite. */
int bp_mp_get_f64(const msgpack_object *map, const char *key, double *out, bp_error *err);
int bp_mp_get_bool(const msgpack_object *map, const char *key, bool *out, bp_error *err);
/* *items points into the zone; *n elements. */
int bp_mp_get_array(const msgpack_object *map, const char *key, const msgpack_object **items,
                    size_t *n, bp_error *err);
int bp_mp_get_map(const msgpack_object *map, const char *key, const msgpack_object **out,
                  bp_error *err);
/* A bin value (bytes view into the frame). */
int bp_mp_get_bin(const msgpack_object *map, const char *key, bp_frame *out, bp_error *err);

#ifdef __cplusplus
}
#endif
#endif
