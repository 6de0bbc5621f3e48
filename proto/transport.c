/* bitplan proto: sending and receiving multipart messages on ZeroMQ sockets.
 * Never blocks on send (ZMQ_DONTWAIT on every part); caps frame count and
 * frame sizes on receive, draining whatever it rejects. */
#include <errno.h>
#include <string.h>

#include "proto_internal.h"

int bp_proto_socket_limits(void *sock, const bp_proto_limits *limits, bp_error *err)
{
    bp_proto_limits lim;
    bp__proto_limits_resolve(limits, &lim);
    if (!sock)
        return bp_error_set(err, BP_EINVAL, "socket limits: NULL socket");
    size_t biggest = lim.max_header_bytes > lim.max_frame_bytes ? lim.max_header_bytes
                                                                : lim.max_frame_bytes;
    int64_t max = biggest > INT64_MAX ? INT64_MAX : (int64_t)biggest;
    int linger = 0;
    if (zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &max, sizeof max) != 0 ||
        zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger) != 0)
        return bp_error_set(err, BP_EIO, "socket limits: %s", zmq_strerror(zmq_errno()));
    return BP_OK;
}

static int send_error(int e, size_t part, bp_error *err)
{
    if (e == EAGAIN)
        return bp_error_set(err, BP_ETIMEOUT,
                            "send: part %zu would block (peer at high-water mark or not "
                            "connected)", part);
    if (e == EHOSTUNREACH)
        return bp_error_set(err, BP_ENOTFOUND, "send: peer unreachable (unknown routing id)");
    return bp_error_set(err, BP_EIO, "send: part %zu: %s", part, zmq_strerror(e));
}

int bp_proto_send(void *sock, const bp_frame *envelope, size_t n_envelope,
                  const bp_proto_out *out, bp_error *err)
{
    bp_frame frames[1 + BP_PROTO_MAX_BIN];
    if (!sock || (n_envelope && !envelope))
        return bp_error_set(err, BP_EINVAL, "send: NULL argument");
    if (n_envelope > BP_PROTO_MAX_ENVELOPE)
        return bp_error_set(err, BP_EINVAL, "send: %zu envelope frames exceed %d", n_envelope,
                            BP_PROTO_MAX_ENVELOPE);
    size_t nf = bp_proto_out_frames(out, frames, 1 + BP_PROTO_MAX_BIN);
    if (nf == 0)
        return bp_error_set(err, BP_EINVAL, "send: nothing encoded");
    size_t total = n_envelope + nf;
    for (size_t i = 0; i < total; i++) {
        const bp_frame *f = i < n_envelope ? &envelope[i] : &frames[i - n_envelope];
        int flags = ZMQ_DONTWAIT | (i + 1 < total ? ZMQ_SNDMORE : 0);
        /* zmq_send copies; a 0-byte frame may have a NULL pointer. */
        if (zmq_send(sock, f->size ? f->data : "", f->size, flags) < 0)
            return send_error(zmq_errno(), i, err);
    }
    return BP_OK;
}

void bp_proto_in_init(bp_proto_in *in)
{
    if (in)
        memset(in, 0, sizeof *in);
}

void bp_proto_in_clear(bp_proto_in *in)
{
    if (!in)
        return;
    for (size_t i = 0; i < in->n_part && i < sizeof in->part / sizeof in->part[0]; i++)
        zmq_msg_close(&in->part[i]);
    bp_proto_in_init(in);
}

/* Copy the connection's ZAP User-Id (absent -> ""). A ROUTER makes the
 * routing frame itself, without the connection's metadata, so the first
 * part that has the property speaks for the message. One that does not fit
 * is BP_EPROTO and leaves "": a truncated id could match another sender's. */
static int read_user_id(zmq_msg_t *parts, size_t n, char out[BP_PROTO_MAX_USER_ID + 1],
                        bp_error *err)
{
    out[0] = '\0';
    const char *uid = NULL;
    for (size_t i = 0; i < n && !uid; i++)
        uid = zmq_msg_gets(&parts[i], "User-Id");
    if (!uid)
        return BP_OK;
    size_t len = strlen(uid);
    if (len > BP_PROTO_MAX_USER_ID)
        return bp_error_set(err, BP_EPROTO, "recv: User-Id of %zu bytes exceeds %d", len,
                            BP_PROTO_MAX_USER_ID);
    memcpy(out, uid, len + 1);
    return BP_OK;
}

int bp_proto_recv(void *sock, size_t n_envelope, const bp_proto_limits *limits, int flags,
                  bp_proto_in *in, bp_error *err)
{
    if (!in)
        return bp_error_set(err, BP_EINVAL, "recv: NULL message");
    bp_proto_in_clear(in);
    if (!sock || n_envelope > BP_PROTO_MAX_ENVELOPE)
        return bp_error_set(err, BP_EINVAL, "recv: bad socket or envelope count %zu", n_envelope);
    bp_proto_limits lim;
    bp__proto_limits_resolve(limits, &lim);
    const size_t cap = n_envelope + 1 + lim.max_bin_frames;
    size_t count = 0;  /* parts of this message seen, kept or not */
    int bad = BP_OK;   /* first violation, reported after draining */
    bp_error local;
    bp_error_clear(&local);

    for (;;) {
        zmq_msg_t scratch;
        zmq_msg_t *m = count < cap ? &in->part[count] : &scratch;
        zmq_msg_init(m);
        int rc = zmq_msg_recv(m, sock, count == 0 ? flags : ZMQ_DONTWAIT);
        if (rc < 0) {
            int e = zmq_errno();
            zmq_msg_close(m);
            if (count == 0 && e == EAGAIN)
                return bp_error_set(err, BP_ETIMEOUT, "recv: no message queued");
            if (count == 0 && e == EINTR)
                return bp_error_set(err, BP_ETIMEOUT, "recv: interrupted");
            /* Later parts of a message are always queued; keep what we have
             * so clear() can close it. */
            return bp_error_set(err, BP_EIO, "recv: part %zu: %s", count, zmq_strerror(e));
        }
        size_t size = zmq_msg_size(m);
        int more = zmq_msg_more(m);
        if (m == &scratch) {
            zmq_msg_close(m);
        } else {
            in->n_part = count + 1;
            if (count < n_envelope) {
                if (size > BP_PROTO_MAX_ROUTING_ID && !bad)
                    bad = bp_error_set(&local, BP_EPROTO,
                                       "recv: routing frame of %zu bytes exceeds %d", size,
                                       BP_PROTO_MAX_ROUTING_ID);
            } else {
                size_t limit = count == n_envelope ? lim.max_header_bytes : lim.max_frame_bytes;
                if (size > limit && !bad)
                    bad = bp_error_set(&local, BP_EPROTO,
                                       "recv: frame %zu of %zu bytes exceeds the limit %zu",
                                       count - n_envelope, size, limit);
            }
        }
        count++;
        if (!more)
            break;
    }

    int uid_rc = read_user_id(in->part, in->n_part, in->user_id, bad ? NULL : &local);
    if (!bad)
        bad = uid_rc;
    if (!bad && count > cap)
        bad = bp_error_set(&local, BP_EPROTO,
                           "recv: message has %zu frames, at most %zu allowed: too many frames",
                           count, cap);
    if (!bad && count < n_envelope + 1)
        bad = bp_error_set(&local, BP_EPROTO, "recv: message has %zu frames, no header frame",
                           count);
    /* Envelope views stay usable for a reply even when the body was bad. */
    size_t nenv = count < n_envelope ? count : n_envelope;
    bool env_ok = true;
    for (size_t i = 0; i < nenv; i++) {
        in->envelope[i].data = zmq_msg_data(&in->part[i]);
        in->envelope[i].size = zmq_msg_size(&in->part[i]);
        if (in->envelope[i].size > BP_PROTO_MAX_ROUTING_ID)
            env_ok = false;
    }
    in->n_envelope = env_ok ? nenv : 0;
    if (bad) {
        if (err)
            *err = local;
        return bad;
    }
    for (size_t i = n_envelope; i < in->n_part; i++) {
        in->body[i - n_envelope].data = zmq_msg_data(&in->part[i]);
        in->body[i - n_envelope].size = zmq_msg_size(&in->part[i]);
    }
    in->n_body = in->n_part - n_envelope;
    return BP_OK;
}
