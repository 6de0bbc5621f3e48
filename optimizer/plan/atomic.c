/* Temporary-file-then-rename writes for the table and plan writers. */
#include "plan_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int bp__has_control(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return 1;
    return 0;
}

int bp__atomic_open(bp__atomic_file *af, const char *path, bp_error *err)
{
    af->fp = NULL;
    af->tmp_path = NULL;
    af->path = path;
    if (!path || !*path)
        return bp_error_set(err, BP_EINVAL, "empty output path");
    size_t n = strlen(path);
    af->tmp_path = malloc(n + 16);
    if (!af->tmp_path)
        return bp_error_set(err, BP_ENOMEM, "%s: out of memory", path);
    memcpy(af->tmp_path, path, n);
    memcpy(af->tmp_path + n, ".tmp.XXXXXX", 12);
    int fd = mkstemp(af->tmp_path);
    if (fd < 0) {
        int e = errno;
        free(af->tmp_path);
        af->tmp_path = NULL;
        return bp_error_set(err, BP_EIO, "%s: cannot create temporary file: %s",
                            path, strerror(e));
    }
    /* mkstemp creates 0600; a plan or table is meant to be shared. */
    (void)fchmod(fd, 0644);
    af->fp = fdopen(fd, "w");
    if (!af->fp) {
        int e = errno;
        close(fd);
        unlink(af->tmp_path);
        free(af->tmp_path);
        af->tmp_path = NULL;
        return bp_error_set(err, BP_EIO, "%s: %s", path, strerror(e));
    }
    return BP_OK;
}

int bp__atomic_commit(bp__atomic_file *af, int ok, bp_error *err)
{
    int rc = BP_OK;
    if (!af->fp)
        return ok ? bp_error_set(err, BP_EINVAL, "file not open") : BP_OK;
    if (ok) {
        if (fflush(af->fp) != 0 || ferror(af->fp) || fsync(fileno(af->fp)) != 0)
            rc = bp_error_set(err, BP_EIO, "%s: write failed: %s", af->path,
                              strerror(errno));
    }
    if (fclose(af->fp) != 0 && ok && rc == BP_OK)
        rc = bp_error_set(err, BP_EIO, "%s: close failed: %s", af->path,
                          strerror(errno));
    af->fp = NULL;
    if (ok && rc == BP_OK && rename(af->tmp_path, af->path) != 0)
        rc = bp_error_set(err, BP_EIO, "%s: rename failed: %s", af->path,
                          strerror(errno));
    if (!ok || rc != BP_OK)
        unlink(af->tmp_path);
    free(af->tmp_path);
    af->tmp_path = NULL;
    return rc;
}
