#include "bitplan/progress.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct bp_progress {
    char label[64];
    uint64_t total;
    uint64_t done;
    int quiet;
    int tty;          /* redraw one line with \r when stderr is a terminal */
    double start;     /* seconds, monotonic */
    double last_draw; /* seconds; draws are rate limited */
};

double bp_now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

bp_progress *bp_progress_new(const char *label, uint64_t total, int quiet)
{
    bp_progress *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    snprintf(p->label, sizeof p->label, "%s", label ? label : "");
    p->total = total;
    p->quiet = quiet;
    p->tty = isatty(STDERR_FILENO);
    p->start = bp_now_seconds();
    p->last_draw = -1.0;
    return p;
}

static void draw(bp_progress *p, int final)
{
    double now = bp_now_seconds();
    double elapsed = now - p->start;
    double frac = p->total ? (double)p->done / (double)p->total : 1.0;
    double eta = (frac > 0 && frac < 1) ? elapsed * (1.0 - frac) / frac : 0.0;
    if (p->tty) {
        int width = 30, fill = (int)(frac * width + 0.5);
        char bar[64];
        for (int i = 0; i < width; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[width] = '\0';
        fprintf(stderr, "\r%-16s [%s] %llu/%llu %5.1f%% %6.1fs ETA %5.1fs%s",
                p->label, bar, (unsigned long long)p->done,
                (unsigned long long)p->total, 100.0 * frac, elapsed, eta,
                final ? "\n" : "");
    } else {
        fprintf(stderr, "%s: %llu/%llu (%.1f%%) %.1fs elapsed, ETA %.1fs\n",
                p->label, (unsigned long long)p->done,
                (unsigned long long)p->total, 100.0 * frac, elapsed, eta);
    }
    fflush(stderr);
    p->last_draw = now;
}

void bp_progress_tick(bp_progress *p, uint64_t n)
{
    if (!p)
        return;
    p->done += n;
    if (p->done > p->total)
        p->done = p->total;
    if (p->quiet)
        return;
    double now = bp_now_seconds();
    /* A terminal redraws often; a log file gets a line every 2 seconds. */
    double interval = p->tty ? 0.2 : 2.0;
    if (p->last_draw < 0 || now - p->last_draw >= interval)
        draw(p, 0);
}

void bp_progress_set(bp_progress *p, uint64_t done, uint64_t total)
{
    if (!p)
        return;
    p->total = total;
    p->done = 0;
    bp_progress_tick(p, done);
}

void bp_progress_done(bp_progress *p)
{
    if (!p || p->quiet)
        return;
    p->done = p->total;
    draw(p, 1);
}

void bp_progress_destroy(bp_progress **p)
{
    if (!p || !*p)
        return;
    free(*p);
    *p = NULL;
}
