#include "bitplan/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void bp_error_clear(bp_error *err)
{
    if (!err)
        return;
    err->code = BP_OK;
    err->msg[0] = '\0';
}

int bp_error_set(bp_error *err, int code, const char *fmt, ...)
{
    if (!err)
        return code;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return code;
}

int bp_error_prefix(bp_error *err, const char *fmt, ...)
{
    if (!err)
        return BP_EINVAL;
    char prefix[BP_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    char old[BP_ERROR_MSG_MAX];
    memcpy(old, err->msg, sizeof old);
    /* Truncation is acceptable: messages are for people. */
    size_t n = strlen(prefix);
    if (n > sizeof err->msg - 3)
        n = sizeof err->msg - 3;
    memcpy(err->msg, prefix, n);
    err->msg[n] = ':';
    err->msg[n + 1] = ' ';
    size_t room = sizeof err->msg - n - 2 - 1;
    size_t m = strlen(old);
    if (m > room)
        m = room;
    memcpy(err->msg + n + 2, old, m);
    err->msg[n + 2 + m] = '\0';
    return err->code;
}

const char *bp_strerror(int code)
{
    switch (code) {
#define BP_ERROR_TEXT(name, value, text) \
    case value:                          \
        return text;
        BP_ERROR_MAP(BP_ERROR_TEXT)
#undef BP_ERROR_TEXT
    }
    return "unknown error";
}

const char *bp_error_name(int code)
{
    switch (code) {
#define BP_ERROR_NAME(name, value, text) \
    case value:                          \
        return #name;
        BP_ERROR_MAP(BP_ERROR_NAME)
#undef BP_ERROR_NAME
    }
    return "BP_E?";
}
