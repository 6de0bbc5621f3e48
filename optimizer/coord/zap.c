/* bitplan coord: the ZAP handler (RFC 27) that admits CURVE clients and
 * workers whose public key is on the allow-list, and nobody else. It runs on
 * the coordinator's thread: the REP socket is polled with the others. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "zap.h"

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define MAX_KEYS 65536
#define MAX_FRAMES 8

struct bp__zap {
    void *sock;
    unsigned char (*keys)[32];
    size_t n_keys;
    uint64_t allowed, denied;
};

static int load_keys(bp__zap *z, const char *path, bp_error *err)
{
    FILE *fp = fopen(path, "r");
    if (!fp)
        return bp_error_set(err, BP_EIO, "%s: %s", path, strerror(errno));
    char line[512];
    int lineno = 0, rc = BP_OK;
    while (fgets(line, sizeof line, fp)) {
        lineno++;
        char *s = line;
        while (isspace((unsigned char)*s))
            s++;
        size_t n = strlen(s);
        while (n && isspace((unsigned char)s[n - 1]))
            s[--n] = '\0';
        /* '#' is a Z85 digit: only lines that are not a 40-character
         * key may be comments */
        unsigned char probe[32];
        if (n == 0 || (s[0] == '#' && !(n == 40 && zmq_z85_decode(probe, s))))
            continue;
        if (z->n_keys >= MAX_KEYS) {
            rc = bp_error_set(err, BP_EINVAL, "%s: more than %d keys", path, MAX_KEYS);
            break;
        }
        if (!z->keys && !(z->keys = calloc(MAX_KEYS, 32))) {
            rc = bp_error_set(err, BP_ENOMEM, "out of memory");
            break;
        }
        if (n != 40 || !zmq_z85_decode(z->keys[z->n_keys], s)) {
            rc = bp_error_set(err, BP_EINVAL,
                              "%s:%d: not a Z85 public key (40 characters expected)", path,
                              lineno);
            break;
        }
        z->n_keys++;
    }
    fclose(fp);
    if (rc == BP_OK && z->n_keys == 0)
        rc = bp_error_set(err, BP_EINVAL, "%s: no keys: nobody could connect", path);
    return rc;
}

int bp__zap_open(void *zctx, const char *allow_file, bp__zap **out, bp_error *err)
{
    *out = NULL;
    bp__zap *z = calloc(1, sizeof *z);
    if (!z)
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    int rc = load_keys(z, allow_file, err);
    if (rc == BP_OK) {
        z->sock = zmq_socket(zctx, ZMQ_REP);
        int zero = 0;
        if (!z->sock || zmq_setsockopt(z->sock, ZMQ_LINGER, &zero, sizeof zero) ||
            zmq_bind(z->sock, ZAP_ENDPOINT) != 0)
            rc = bp_error_set(err, BP_EIO, "ZAP handler: %s", zmq_strerror(zmq_errno()));
    }
    if (rc != BP_OK) {
        bp__zap_close(&z);
        return rc;
    }
    *out = z;
    return BP_OK;
}

void *bp__zap_socket(bp__zap *z)
{
    return z ? z->sock : NULL;
}

static void send_frame(void *sock, const void *data, size_t n, int more)
{
    (void)zmq_send(sock, n ? data : "", n, more ? ZMQ_SNDMORE : 0);
}

int bp__zap_handle(bp__zap *z, char *user, size_t user_cap)
{
    zmq_msg_t f[MAX_FRAMES];
    size_t nf = 0, total = 0;
    int more = 1;
    if (user_cap)
        user[0] = '\0';
    while (more) {
        zmq_msg_t scratch, *m = nf < MAX_FRAMES ? &f[nf] : &scratch;
        zmq_msg_init(m);
        if (zmq_msg_recv(m, z->sock, total ? 0 : ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(m);
            if (!total)
                return -1; /* nothing queued */
            break;
        }
        more = zmq_msg_more(m);
        total++;
        if (m == &scratch)
            zmq_msg_close(m);
        else
            nf++;
    }
    /* Fail closed: admit only a well-formed CURVE request with a listed key. */
    int ok = nf >= 7 && total == 7 && zmq_msg_size(&f[0]) == 3 &&
             !memcmp(zmq_msg_data(&f[0]), "1.0", 3) && zmq_msg_size(&f[5]) == 5 &&
             !memcmp(zmq_msg_data(&f[5]), "CURVE", 5) && zmq_msg_size(&f[6]) == 32;
    int listed = 0;
    for (size_t i = 0; ok && i < z->n_keys && !listed; i++)
        listed = !memcmp(z->keys[i], zmq_msg_data(&f[6]), 32);
    char uid[41] = "";
    if (listed)
        zmq_z85_encode(uid, zmq_msg_data(&f[6]), 32);
    send_frame(z->sock, "1.0", 3, 1);
    if (nf >= 2)
        send_frame(z->sock, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), 1);
    else
        send_frame(z->sock, "", 0, 1);
    send_frame(z->sock, listed ? "200" : "400", 3, 1);
    const char *text = listed ? "OK" : "key not allowed";
    send_frame(z->sock, text, strlen(text), 1);
    send_frame(z->sock, uid, strlen(uid), 1); /* User-Id: the client's Z85 key */
    send_frame(z->sock, "", 0, 0);
    for (size_t i = 0; i < nf; i++)
        zmq_msg_close(&f[i]);
    if (listed) {
        z->allowed++;
        if (user_cap)
            snprintf(user, user_cap, "%s", uid);
    } else {
        z->denied++;
    }
    return listed;
}

void bp__zap_close(bp__zap **p)
{
    if (!p || !*p)
        return;
    if ((*p)->sock)
        zmq_close((*p)->sock);
    free((*p)->keys);
    free(*p);
    *p = NULL;
}
