/* bitplan coord: CURVE key files (see coord.h and docs/security.md). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "bitplan/coord.h"

static int z85_ok(const char *s)
{
    unsigned char raw[32];
    return strlen(s) == BP_CURVE_KEY_LEN && zmq_z85_decode(raw, s) != NULL;
}

int bp_curve_load_key(const char *arg, char out[BP_CURVE_KEY_LEN + 1], bp_error *err)
{
    out[0] = '\0';
    if (!arg)
        return bp_error_set(err, BP_EINVAL, "no key given");
    FILE *fp = fopen(arg, "r");
    if (!fp) {
        if (z85_ok(arg)) {
            memcpy(out, arg, BP_CURVE_KEY_LEN + 1);
            return BP_OK;
        }
        return bp_error_set(err, BP_EIO, "%s: %s (and not a 40-character Z85 key)", arg,
                            strerror(errno));
    }
    char line[256];
    int rc = bp_error_set(err, BP_EINVAL, "%s: no key found", arg);
    while (fgets(line, sizeof line, fp)) {
        char *s = line;
        while (isspace((unsigned char)*s))
            s++;
        size_t n = strlen(s);
        while (n && isspace((unsigned char)s[n - 1]))
            s[--n] = '\0';
        /* '#' is a Z85 digit: a 40-character Z85 line is a key even when it
         * starts with '#'; other '#' lines are comments. */
        if (n == 0 || (s[0] == '#' && !z85_ok(s)))
            continue;
        if (!z85_ok(s)) {
            rc = bp_error_set(err, BP_EINVAL, "%s: not a Z85 key (40 characters expected)", arg);
        } else {
            memcpy(out, s, BP_CURVE_KEY_LEN + 1);
            rc = BP_OK;
        }
        break;
    }
    fclose(fp);
    return rc;
}

int bp_curve_public_key(const char *secret, char out[BP_CURVE_KEY_LEN + 1], bp_error *err)
{
    if (!secret || !z85_ok(secret) || zmq_curve_public(out, secret) != 0)
        return bp_error_set(err, BP_EINVAL, "invalid CURVE secret key");
    return BP_OK;
}

static int write_key(const char *path, const char *key, const char *what, mode_t mode, int force,
                     bp_error *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (force ? O_TRUNC : O_EXCL), mode);
    if (fd < 0)
        return bp_error_set(err, BP_EIO, "%s: %s%s", path, strerror(errno),
                            errno == EEXIST ? " (use --force to overwrite)" : "");
    char buf[160];
    int n = snprintf(buf, sizeof buf, "# bitplan CURVE %s key\n%s\n", what, key);
    int bad = fchmod(fd, mode) != 0 || write(fd, buf, (size_t)n) != n || fsync(fd) != 0;
    bad = close(fd) != 0 || bad;
    if (bad)
        return bp_error_set(err, BP_EIO, "%s: %s", path, strerror(errno));
    return BP_OK;
}

int bp_curve_keygen(const char *prefix, int force, bp_error *err)
{
    char pub[BP_CURVE_KEY_LEN + 1], sec[BP_CURVE_KEY_LEN + 1];
    if (!prefix || !*prefix || strlen(prefix) > 4000)
        return bp_error_set(err, BP_EINVAL, "keygen: bad output prefix");
    if (zmq_curve_keypair(pub, sec) != 0)
        return bp_error_set(err, BP_EUNSUPPORTED, "keygen: %s (libzmq built without CURVE?)",
                            zmq_strerror(zmq_errno()));
    char path[4096 + 8];
    snprintf(path, sizeof path, "%s.key", prefix);
    int rc = write_key(path, sec, "secret", 0600, force, err);
    if (rc == BP_OK) {
        snprintf(path, sizeof path, "%s.pub", prefix);
        rc = write_key(path, pub, "public", 0644, force, err);
    }
    memset(sec, 0, sizeof sec);
    return rc;
}
