/* Budget strings from the command line, parsed as exact decimals. */
#include "bitplan/budget.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

__extension__ typedef unsigned __int128 u128;

/* Parses a plain decimal at *s into num / den (den a power of ten),
 * advancing *s past it. Trailing fractional zeros are dropped so that
 * "3.50000000000000000000" is as good as "3.5". Returns 0, or a reason. */
static const char *parse_decimal(const char **sp, uint64_t *num, uint64_t *den)
{
    const char *s = *sp;
    if (*s == '-')
        return "must be positive";
    const char *int_start = s;
    while (*s >= '0' && *s <= '9')
        s++;
    const char *int_end = s;
    const char *frac_start = NULL, *frac_end = NULL;
    if (*s == '.') {
        frac_start = ++s;
        while (*s >= '0' && *s <= '9')
            s++;
        frac_end = s;
    }
    if (int_end == int_start && (!frac_start || frac_end == frac_start))
        return "not a number";
    if (frac_start)
        while (frac_end > frac_start && frac_end[-1] == '0')
            frac_end--;
    uint64_t n = 0, d = 1;
    for (const char *p = int_start; p < int_end; p++) {
        unsigned dig = (unsigned)(*p - '0');
        if (n > (UINT64_MAX - dig) / 10)
            return "too large";
        n = n * 10 + dig;
    }
    for (const char *p = frac_start; p && p < frac_end; p++) {
        unsigned dig = (unsigned)(*p - '0');
        if (n > (UINT64_MAX - dig) / 10 || d > UINT64_MAX / 10)
            return "too many digits";
        n = n * 10 + dig;
        d *= 10;
    }
    *num = n;
    *den = d;
    *sp = s;
    return NULL;
}

static const char *skip_blanks(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

int bp_budget_parse_bits(const char *text, bp_budget *out, bp_error *err)
{
    if (!out)
        return bp_error_set(err, BP_EINVAL, "bp_budget_parse_bits: NULL out");
    memset(out, 0, sizeof *out);
    if (!text || !*skip_blanks(text))
        return bp_error_set(err, BP_EINVAL,
                            "--budget-bits: empty value (expected bits per weight, "
                            "e.g. 3.5)");
    const char *s = skip_blanks(text);
    uint64_t num, den;
    const char *why = parse_decimal(&s, &num, &den);
    if (!why && *skip_blanks(s))
        why = "not a number (expected bits per weight, e.g. 3.5)";
    if (!why && num == 0)
        why = "must be greater than zero";
    if (!why && (u128)num > (u128)BP_BUDGET_MAX_BITS * den)
        why = "too large (at most 64 bits per weight)";
    if (why)
        return bp_error_set(err, BP_EINVAL, "--budget-bits \"%s\": %s", text, why);
    out->kind = BP_BUDGET_BITS;
    out->bits_num = num;
    out->bits_den = den;
    out->bits = (double)num / (double)den;
    return BP_OK;
}

static const struct {
    const char *name;
    uint64_t mult;
} units[] = {
    {"", 1},
    {"B", 1},
    {"KB", 1000ull},
    {"MB", 1000000ull},
    {"GB", 1000000000ull},
    {"TB", 1000000000000ull},
    {"KiB", 1ull << 10},
    {"MiB", 1ull << 20},
    {"GiB", 1ull << 30},
    {"TiB", 1ull << 40},
};

int bp_budget_parse_bytes(const char *text, bp_budget *out, bp_error *err)
{
    if (!out)
        return bp_error_set(err, BP_EINVAL, "bp_budget_parse_bytes: NULL out");
    memset(out, 0, sizeof *out);
    if (!text || !*skip_blanks(text))
        return bp_error_set(err, BP_EINVAL,
                            "--budget-bytes: empty value (expected e.g. 7500000000, "
                            "7.5GB or 512MiB)");
    const char *s = skip_blanks(text);
    uint64_t num, den;
    const char *why = parse_decimal(&s, &num, &den);
    if (why)
        return bp_error_set(err, BP_EINVAL, "--budget-bytes \"%s\": %s", text, why);
    s = skip_blanks(s);
    size_t ulen = strlen(s);
    while (ulen && (s[ulen - 1] == ' ' || s[ulen - 1] == '\t'))
        ulen--;
    uint64_t mult = 0;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strlen(units[i].name) == ulen && strncasecmp(s, units[i].name, ulen) == 0)
            mult = units[i].mult;
    if (!mult)
        return bp_error_set(err, BP_EINVAL,
                            "--budget-bytes \"%s\": unknown unit \"%.*s\" (use B, KB, "
                            "MB, GB, TB, KiB, MiB, GiB or TiB)",
                            text, (int)ulen, s);
    if (num == 0)
        return bp_error_set(err, BP_EINVAL, "--budget-bytes \"%s\": must be greater "
                            "than zero", text);
    if (mult == 1 && den != 1)
        return bp_error_set(err, BP_EINVAL,
                            "--budget-bytes \"%s\": not a whole number of bytes", text);
    u128 bytes = (u128)num * mult / den;
    if (bytes > UINT64_MAX)
        return bp_error_set(err, BP_EINVAL, "--budget-bytes \"%s\": too large", text);
    if (bytes == 0)
        return bp_error_set(err, BP_EINVAL,
                            "--budget-bytes \"%s\": less than one byte", text);
    out->kind = BP_BUDGET_BYTES;
    out->bytes = (uint64_t)bytes;
    return BP_OK;
}

int bp_budget_capacity(const bp_budget *b, uint64_t params, uint64_t *capacity,
                       bp_error *err)
{
    if (!b || !capacity)
        return bp_error_set(err, BP_EINVAL, "bp_budget_capacity: NULL argument");
    *capacity = 0;
    if (params == 0)
        return bp_error_set(err, BP_EINVAL,
                            "budget: no quantized weights (no tensor selected)");
    switch (b->kind) {
    case BP_BUDGET_BYTES:
        if (b->bytes == 0)
            return bp_error_set(err, BP_EINVAL, "budget: 0 bytes");
        *capacity = b->bytes;
        return BP_OK;
    case BP_BUDGET_BITS: {
        if (b->bits_num == 0 || b->bits_den == 0)
            return bp_error_set(err, BP_EINVAL, "budget: 0 bits per weight");
        /* num < 2^64 and params < 2^64, so the product fits in 128 bits. */
        u128 c = (u128)b->bits_num * params / ((u128)b->bits_den * 8u);
        if (c > UINT64_MAX)
            return bp_error_set(err, BP_EINVAL,
                                "budget: %.17g bits x %llu weights overflows", b->bits,
                                (unsigned long long)params);
        if (c == 0)
            return bp_error_set(err, BP_EINVAL,
                                "budget: %.17g bits per weight over %llu weights is "
                                "less than one byte",
                                b->bits, (unsigned long long)params);
        *capacity = (uint64_t)c;
        return BP_OK;
    }
    case BP_BUDGET_NONE:
        break;
    }
    return bp_error_set(err, BP_EINVAL, "budget: not set");
}

double bp_budget_bits_per_weight(uint64_t bytes, uint64_t params)
{
    if (params == 0)
        return NAN;
    return 8.0 * (double)bytes / (double)params;
}
