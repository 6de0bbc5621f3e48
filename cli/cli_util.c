#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

int bp_cli_fail(const char *cmd, const bp_error *err)
{
    fprintf(stderr, "bitplan %s: error: %s\n", cmd,
            err && err->msg[0] ? err->msg : bp_strerror(err ? err->code : BP_EINVAL));
    return BP_EXIT_FAIL;
}

int bp_cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "bitplan %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nRun 'bitplan %s --help' for usage.\n", cmd);
    return BP_EXIT_USAGE;
}

int bp_cli_parse_double(const char *cmd, const char *opt, const char *s,
                        double lo, double hi, double *out)
{
    if (!s || !*s)
        return bp_cli_usage_error(cmd, "%s needs a number", opt);
    errno = 0;
    char *end = NULL;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !isfinite(v))
        return bp_cli_usage_error(cmd, "%s: '%s' is not a number", opt, s);
    if (v < lo || v > hi)
        return bp_cli_usage_error(cmd, "%s: %s is outside [%g, %g]", opt, s, lo, hi);
    *out = v;
    return 0;
}

int bp_cli_parse_long(const char *cmd, const char *opt, const char *s, long lo,
                      long hi, long *out)
{
    if (!s || !*s)
        return bp_cli_usage_error(cmd, "%s needs an integer", opt);
    errno = 0;
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0')
        return bp_cli_usage_error(cmd, "%s: '%s' is not an integer", opt, s);
    if (v < lo || v > hi)
        return bp_cli_usage_error(cmd, "%s: %s is outside [%ld, %ld]", opt, s, lo, hi);
    *out = v;
    return 0;
}
