/* Helpers for tests that run the bitplan executable. */
#ifndef BITPLAN_CLI_TEST_UTIL_H
#define BITPLAN_CLI_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define MODEL_DIR BP_SOURCE_DIR "/examples/models/tiny-llama-kjv"

/* Run `bitplan <args>` through the shell with stdout and stderr captured to
 * files under BP_TEST_TMPDIR/<tag>.{out,err}; return the exit status. */
static int run_bitplan(const char *tag, const char *args)
{
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "%s %s >%s/%s.out 2>%s/%s.err", BP_BINARY, args, BP_TEST_TMPDIR,
             tag, BP_TEST_TMPDIR, tag);
    int st = system(cmd);
    if (st == -1 || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

/* Whole file as a NUL-terminated string (caller frees), or NULL. */
static char *slurp(const char *path, size_t *len_out)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    if (buf && fread(buf, 1, (size_t)len, fp) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    fclose(fp);
    if (buf) {
        buf[len] = '\0';
        if (len_out)
            *len_out = (size_t)len;
    }
    return buf;
}

static char *captured(const char *tag, const char *stream)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.%s", BP_TEST_TMPDIR, tag, stream);
    return slurp(path, NULL);
}

#endif
