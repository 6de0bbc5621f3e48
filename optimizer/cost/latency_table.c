/* Measured latency tables: CSV of µs per (rows, cols, format[, phase,
 * batch]) (docs/cost-models.md, "Latency table"). */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cost_internal.h"

#define MAX_FILE (64u << 20) /* bytes */
#define PHASE_ANY (-1)
#define BATCH_ANY 0

typedef struct entry {
    int64_t rows, cols;
    char format[BP_FORMAT_NAME_MAX];
    int phase;     /* bp_cost_phase or PHASE_ANY */
    int64_t batch; /* >= 1 or BATCH_ANY */
    double us;
    size_t line;
} entry;

struct bp_latency_table {
    char *source;
    entry *e; /* sorted by key (cmp_entry) */
    size_t n;
};

enum { COL_ROWS, COL_COLS, COL_FORMAT, COL_LATENCY, COL_PHASE, COL_BATCH, N_COLS };
static const char *const col_names[N_COLS] = {"rows",       "cols",  "format",
                                              "latency_us", "phase", "batch"};
#define KNOWN_COLS "rows, cols, format, latency_us, phase, batch"

void bp_latency_table_destroy(bp_latency_table **tp)
{
    if (!tp || !*tp)
        return;
    free((*tp)->source);
    free((*tp)->e);
    free(*tp);
    *tp = NULL;
}

size_t bp_latency_table_count(const bp_latency_table *t)
{
    return t ? t->n : 0;
}

static int cmp_key(const entry *a, const entry *b)
{
    if (a->rows != b->rows)
        return a->rows < b->rows ? -1 : 1;
    if (a->cols != b->cols)
        return a->cols < b->cols ? -1 : 1;
    int c = strcmp(a->format, b->format);
    if (c)
        return c;
    if (a->phase != b->phase)
        return a->phase < b->phase ? -1 : 1;
    if (a->batch != b->batch)
        return a->batch < b->batch ? -1 : 1;
    return 0;
}

static int cmp_entry(const void *pa, const void *pb)
{
    const entry *a = pa, *b = pb;
    int c = cmp_key(a, b);
    if (c)
        return c;
    return a->line < b->line ? -1 : a->line > b->line;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = '\0';
    return s;
}

/* Strict positive decimal integer: digits only, no sign, value >= 1. */
static const char *parse_count(const char *s, int64_t *out)
{
    if (!*s)
        return "empty";
    int64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return "not a whole number";
        if (v > (INT64_MAX - (*p - '0')) / 10)
            return "too large";
        v = v * 10 + (*p - '0');
    }
    if (v < 1)
        return "must be >= 1";
    *out = v;
    return NULL;
}

/* Plain decimal (digits, '.', exponent); no hex, nan or inf. */
static const char *parse_us(const char *s, double *out)
{
    if (!*s)
        return "empty";
    if (strspn(s, "0123456789.eE+-") != strlen(s))
        return "not a number";
    errno = 0;
    char *end;
    double d = strtod(s, &end);
    if (end == s || *end)
        return "not a number";
    if (!isfinite(d) || errno == ERANGE)
        return "out of range";
    if (!(d > 0))
        return "must be > 0";
    *out = d;
    return NULL;
}

/* "<src>:<line>: <message>", BP_EFORMAT. */
__attribute__((format(printf, 4, 5))) static int line_err(bp_error *err, const char *src,
                                                          size_t line, const char *fmt, ...)
{
    char msg[BP_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return bp_error_set(err, BP_EFORMAT, "%s:%zu: %s", src, line, msg);
}

#define LINE_ERR(...)                                    \
    do {                                                 \
        rc = line_err(err, src, lineno, __VA_ARGS__);    \
        goto out;                                        \
    } while (0)

int bp_latency_table_from_text(const char *text, const char *source,
                               bp_latency_table **out, bp_error *err)
{
    const char *src = source ? source : "table";
    if (!out)
        return bp_error_set(err, BP_EINVAL, "bp_latency_table_from_text: NULL out");
    *out = NULL;
    if (!text)
        return bp_error_set(err, BP_EINVAL, "%s: NULL text", src);
    int rc = BP_OK;
    size_t lineno = 0;
    size_t len = strlen(text);
    char *buf = malloc(len + 1);
    bp_latency_table *t = calloc(1, sizeof *t);
    size_t cap = 0;
    int col_of[N_COLS];       /* column index of each known column, -1 absent */
    int kind_at[N_COLS];      /* known column at each index */
    int n_header = 0;         /* 0 until the header is read */
    if (!buf || !t || !(t->source = strdup(src))) {
        rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", src);
        goto out;
    }
    memcpy(buf, text, len + 1);
    char *p = buf;
    if ((unsigned char)p[0] == 0xef && (unsigned char)p[1] == 0xbb &&
        (unsigned char)p[2] == 0xbf)
        p += 3; /* UTF-8 byte order mark from spreadsheet exports */
    while (*p) {
        char *line = p;
        char *nl = strchr(p, '\n');
        if (nl) {
            *nl = '\0';
            p = nl + 1;
        } else {
            p += strlen(p);
        }
        lineno++;
        size_t ll = strlen(line);
        if (ll > 0 && line[ll - 1] == '\r')
            line[--ll] = '\0';
        char *s = trim(line);
        if (*s == '\0' || *s == '#')
            continue;
        if (strchr(s, '"'))
            LINE_ERR("quoted fields are not supported");
        /* Split into at most N_COLS + 1 fields (one more means too many). */
        char *fld[N_COLS + 1];
        int nf = 0;
        for (char *q = s;;) {
            char *comma = strchr(q, ',');
            if (nf == N_COLS + 1)
                break;
            fld[nf++] = q;
            if (!comma)
                break;
            *comma = '\0';
            q = comma + 1;
        }
        for (int i = 0; i < nf; i++)
            fld[i] = trim(fld[i]);
        if (!n_header) {
            if (nf > N_COLS)
                LINE_ERR("header: more than %d columns (known: %s)", N_COLS, KNOWN_COLS);
            for (int c = 0; c < N_COLS; c++)
                col_of[c] = -1;
            for (int i = 0; i < nf; i++) {
                int c = 0;
                while (c < N_COLS && strcmp(fld[i], col_names[c]))
                    c++;
                if (c == N_COLS)
                    LINE_ERR("header: unknown column \"%s\" (known: %s; the header line "
                             "is required)",
                             fld[i], KNOWN_COLS);
                if (col_of[c] >= 0)
                    LINE_ERR("header: column \"%s\" given twice", fld[i]);
                col_of[c] = i;
                kind_at[i] = c;
            }
            for (int c = COL_ROWS; c <= COL_LATENCY; c++)
                if (col_of[c] < 0)
                    LINE_ERR("header: missing column \"%s\" (required: rows, cols, format, "
                             "latency_us)",
                             col_names[c]);
            if (col_of[COL_BATCH] >= 0 && col_of[COL_PHASE] < 0)
                LINE_ERR("header: column \"batch\" needs a \"phase\" column");
            n_header = nf;
            continue;
        }
        if (nf != n_header)
            LINE_ERR("expected %d fields as in the header, got %s%d", n_header,
                     nf > N_COLS ? "at least " : "", nf);
        entry e = {.phase = PHASE_ANY, .batch = BATCH_ANY, .line = lineno};
        const char *fmt_text = NULL;
        for (int i = 0; i < nf; i++) {
            const char *why = NULL;
            const char *v = fld[i];
            switch (kind_at[i]) {
            case COL_ROWS:
                why = parse_count(v, &e.rows);
                break;
            case COL_COLS:
                why = parse_count(v, &e.cols);
                break;
            case COL_FORMAT:
                fmt_text = v;
                break;
            case COL_LATENCY:
                why = parse_us(v, &e.us);
                break;
            case COL_PHASE:
                if (*v) {
                    bp_cost_phase ph;
                    if (bp_cost_phase_parse(v, &ph, NULL))
                        why = "must be decode, prefill or empty (any)";
                    else
                        e.phase = (int)ph;
                }
                break;
            case COL_BATCH:
                if (*v)
                    why = parse_count(v, &e.batch);
                break;
            }
            if (why)
                LINE_ERR("%s \"%s\": %s", col_names[kind_at[i]], v, why);
        }
        if (e.batch != BATCH_ANY && e.phase == PHASE_ANY)
            LINE_ERR("batch %lld given without a phase", (long long)e.batch);
        bp_format f;
        bp_error fe;
        if (bp_format_parse(fmt_text, &f, &fe))
            LINE_ERR("format \"%s\": unknown format (%s)", fmt_text, fe.msg);
        if (!bp_format_supports(&f, e.rows, e.cols))
            LINE_ERR("format %s cannot store a %lldx%lld matrix", f.name,
                     (long long)e.rows, (long long)e.cols);
        memcpy(e.format, f.name, sizeof e.format);
        if (t->n == cap) {
            size_t nc = cap ? 2 * cap : 64;
            entry *ne = realloc(t->e, nc * sizeof *ne);
            if (!ne) {
                rc = bp_error_set(err, BP_ENOMEM, "%s: out of memory", src);
                goto out;
            }
            t->e = ne;
            cap = nc;
        }
        t->e[t->n++] = e;
    }
    if (!n_header) {
        lineno = lineno ? lineno : 1;
        LINE_ERR("no header line (expected e.g. \"rows,cols,format,latency_us\")");
    }
    if (t->n)
        qsort(t->e, t->n, sizeof *t->e, cmp_entry);
    /* Report the duplicate that comes first in the file. */
    size_t dup = 0, orig = 0;
    for (size_t i = 1; i < t->n; i++)
        if (cmp_key(&t->e[i - 1], &t->e[i]) == 0 && (!dup || t->e[i].line < dup)) {
            dup = t->e[i].line;
            orig = t->e[i - 1].line;
        }
    if (dup) {
        lineno = dup;
        LINE_ERR("duplicate entry: same rows, cols, format, phase and batch as line %zu",
                 orig);
    }
out:
    free(buf);
    if (rc)
        bp_latency_table_destroy(&t);
    *out = t;
    return rc;
}

int bp_latency_table_load(const char *path, bp_latency_table **out, bp_error *err)
{
    if (!out)
        return bp_error_set(err, BP_EINVAL, "bp_latency_table_load: NULL out");
    *out = NULL;
    if (!path)
        return bp_error_set(err, BP_EINVAL, "bp_latency_table_load: NULL path");
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return bp_error_set(err, errno == ENOENT ? BP_ENOTFOUND : BP_EIO, "%s: %s", path,
                            strerror(errno));
    char *buf = malloc((size_t)MAX_FILE + 1);
    if (!buf) {
        fclose(fp);
        return bp_error_set(err, BP_ENOMEM, "%s: out of memory", path);
    }
    size_t n = fread(buf, 1, (size_t)MAX_FILE + 1, fp);
    int rc = BP_OK;
    const char *nul;
    if (ferror(fp)) {
        rc = bp_error_set(err, BP_EIO, "%s: read error", path);
    } else if (n > MAX_FILE) {
        rc = bp_error_set(err, BP_EFORMAT, "%s: larger than %u bytes", path, MAX_FILE);
    } else if ((nul = memchr(buf, '\0', n))) {
        size_t line = 1;
        for (const char *q = buf; q < nul; q++)
            line += *q == '\n';
        rc = bp_error_set(err, BP_EFORMAT, "%s:%zu: NUL byte in line", path, line);
    }
    fclose(fp);
    if (rc == BP_OK) {
        buf[n] = '\0';
        rc = bp_latency_table_from_text(buf, path, out, err);
    }
    free(buf);
    return rc;
}

int bp_latency_table_lookup(const bp_latency_table *t, int64_t rows, int64_t cols,
                            const bp_format *f, bp_cost_phase phase, int64_t batch,
                            double *out_us, bp_error *err)
{
    if (!out_us)
        return bp_error_set(err, BP_EINVAL, "bp_latency_table_lookup: NULL out_us");
    *out_us = NAN;
    if (!t)
        return bp_error_set(err, BP_EINVAL, "bp_latency_table_lookup: NULL table");
    int rc = bp__cost_check_format(f, err);
    if (rc)
        return bp_error_prefix(err, "%s", t->source);
    if (!bp_cost_phase_name(phase) || rows < 1 || cols < 1 || batch < 1)
        return bp_error_set(err, BP_EINVAL,
                            "%s: lookup of %lldx%lld %s %s batch %lld: bad phase, sizes or "
                            "batch (must be >= 1)",
                            t->source, (long long)rows, (long long)cols, f->name,
                            bp_cost_phase_name(phase) ? bp_cost_phase_name(phase) : "?",
                            (long long)batch);
    entry key = {.rows = rows, .cols = cols, .phase = PHASE_ANY, .batch = BATCH_ANY};
    memcpy(key.format, f->name, sizeof key.format);
    /* First entry with this (rows, cols, format): PHASE_ANY sorts first. */
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cmp_key(&t->e[mid], &key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    int best_score = -1;
    double best = NAN;
    for (size_t i = lo; i < t->n; i++) {
        const entry *e = &t->e[i];
        if (e->rows != rows || e->cols != cols || strcmp(e->format, key.format))
            break;
        if (e->phase != PHASE_ANY && e->phase != (int)phase)
            continue;
        if (e->batch != BATCH_ANY && e->batch != batch)
            continue;
        int score = (e->phase != PHASE_ANY) + (e->batch != BATCH_ANY);
        if (score > best_score) {
            best_score = score;
            best = e->us;
        }
    }
    if (best_score < 0)
        return bp_error_set(err, BP_ENOTFOUND,
                            "%s: no latency entry for %lldx%lld %s %s batch %lld", t->source,
                            (long long)rows, (long long)cols, f->name,
                            bp_cost_phase_name(phase), (long long)batch);
    *out_us = best;
    return BP_OK;
}

int bp_cost_latency_lookup_us(const bp_latency_table *t, const bp_hw_profile *fallback,
                              const bp_format *f, int64_t rows, int64_t cols,
                              bp_cost_phase phase, int64_t batch, double *out_us,
                              int *from_table, bp_error *err)
{
    if (from_table)
        *from_table = 0;
    if (!out_us)
        return bp_error_set(err, BP_EINVAL, "bp_cost_latency_lookup_us: NULL out_us");
    *out_us = NAN;
    if (!t && !fallback)
        return bp_error_set(err, BP_EINVAL,
                            "bp_cost_latency_lookup_us: neither a table nor a profile");
    if (t) {
        int rc = bp_latency_table_lookup(t, rows, cols, f, phase, batch, out_us, err);
        if (rc != BP_ENOTFOUND || !fallback) {
            if (rc == BP_OK && from_table)
                *from_table = 1;
            return rc;
        }
    }
    return bp_cost_latency_us(fallback, f, rows, cols, phase, batch, out_us, err);
}
