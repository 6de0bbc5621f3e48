/* bench_search: the search module on block-level and 7B-shaped problems.
 *
 * (a) Block-level Lagrangian (bp_solve_lagrange, one constraint): 10^5,
 *     10^6, 10^7 items (blocks of 4096 weights) x 8 formats, errors
 *     2^(-2 q) x per-block sensitivity x noise, bytes per block, budget
 *     4.25 bits per weight. Baseline in the same run: qsort of n doubles.
 *     Reports time, gap bound, peak RSS.
 * (b) NSGA-II, 200 generations, population 100, on the 7B-shaped proxy of
 *     bench_solve (224 tensors x 53 formats, bytes + synthetic latency),
 *     seeded with the ILP optima at 3.0 / 3.5 / 4.25 bpw, caps at 4.25 bpw.
 *     Baseline: the three ILP solves.
 * (c) Two constraints (bytes + latency) on the 7B proxy: bp_solve_lagrange
 *     vs bp_solve_ilp, time and objective ratios.
 *
 * Usage: bench_search [--quick] [--threads N]
 *   --quick: (a) up to 10^6 items, (b) 20 generations, (c) 3.0 bpw only.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bitplan/lagrange.h"
#include "bitplan/nsga2.h"
#include "bitplan/solve.h"

#include "bench_problem.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double peak_rss_gb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / (1024.0 * 1024.0); /* ru_maxrss in KiB */
}

/* ---- (a) block-level problem ---- */

#define BLOCK 4096.0 /* weights per block */

static bp_problem *block_problem(size_t n, double bpw)
{
    /* bits, group (0 = per block scale), "quality bits" */
    static const struct {
        double bits, group, q;
    } f[8] = {{2, 64, 2.3}, {3, 64, 3.3}, {4, 128, 4.15}, {4, 64, 4.3},
              {5, 64, 5.3}, {6, 64, 6.3}, {8, 0, 8.0},    {16, 0, 13.0}};
    bp_problem *p = bp_problem_new(1);
    bp_error e;
    bench_rng r = {42};
    char name[32];
    for (size_t i = 0; i < n; i++) {
        snprintf(name, sizeof name, "b%zu", i);
        if (bp_problem_add_item(p, name, &e))
            bench_die("add_item", &e);
        /* per-tensor (every 1024 blocks) and per-block sensitivity */
        double s = exp(1.5 * (bench_rng_unit(&r) - 0.5)) * (1.0 + 3.0 * (double)((i / 1024) % 7 == 0));
        for (int k = 0; k < 8; k++) {
            double bytes = BLOCK * f[k].bits / 8.0 + (f[k].group ? BLOCK / f[k].group * 2.0 : 2.0);
            double err = s * BLOCK * exp2(-2.0 * f[k].q) * (0.85 + 0.3 * bench_rng_unit(&r)) * 1e-3;
            if (bp_problem_add_choice(p, k, err, &bytes, &e))
                bench_die("add_choice", &e);
        }
    }
    if (bp_problem_set_constraint(p, 0, "bytes", floor(bpw * BLOCK * (double)n / 8.0), &e))
        bench_die("set_constraint", &e);
    return p;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double sort_baseline(size_t n)
{
    double *v = malloc(n * sizeof *v);
    if (!v)
        return NAN;
    bench_rng r = {7};
    for (size_t i = 0; i < n; i++)
        v[i] = bench_rng_unit(&r);
    double t0 = now();
    qsort(v, n, sizeof *v, cmp_double);
    double t = now() - t0;
    free(v);
    return t;
}

/* ---- (b), (c): the 7B-shaped proxy of bench_solve ---- */

int main(int argc, char **argv)
{
    int quick = 0, threads = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = 1;
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
            threads = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--quick] [--threads N]\n", argv[0]);
            return 2;
        }
    }
    int nt = threads > 0 ? threads : omp_get_max_threads();
    int rc_all = 0;
    bp_error e;

    /* (a) */
    printf("(a) block-level lagrange, 1 constraint, 8 formats per block, 4.25 bpw, %d threads\n", nt);
    printf("%-10s %-9s %-9s %-10s %-10s %-11s %-9s %-8s %s\n", "items", "build_s", "solve_s",
           "status", "gap", "bpw", "sort_s", "solve/sort", "peak_rss_GB");
    static const size_t sizes[3] = {100000, 1000000, 10000000};
    for (int k = 0; k < (quick ? 2 : 3); k++) {
        size_t n = sizes[k];
        double t0 = now();
        bp_problem *p = block_problem(n, 4.25);
        double tb = now() - t0;
        bp_lagrange_options o;
        bp_lagrange_options_default(&o);
        o.threads = threads;
        bp_solution s = {0};
        int rc = bp_solve_lagrange(p, &o, &s, &e);
        if (rc) {
            fprintf(stderr, "lagrange n=%zu: %s\n", n, e.msg);
            rc_all = 1;
        }
        double ts = sort_baseline(n);
        printf("%-10zu %-9.3f %-9.3f %-10s %-10.3g %-11.6f %-9.3f %-10.2f %.2f\n", n, tb, s.seconds,
               rc ? bp_error_name(rc) : bp_solve_status_name(s.status), s.gap,
               8.0 * s.cost_total[0] / (BLOCK * (double)n), ts, s.seconds / ts, peak_rss_gb());
        if (n == 100000 && !quick) {
            /* Exact reference where GLPK can still cope. */
            bp_ilp_options io;
            bp_ilp_options_default(&io);
            io.time_limit_s = 20;
            bp_solution si = {0};
            int ri = bp_solve_ilp(p, &io, &si, &e);
            if (ri)
                printf("           ilp: %s (%s)\n", bp_error_name(ri), e.msg);
            else
                printf("           ilp: %.3f s, %s, gap %.2g; lagrange/ilp objective %.9f, time %.4f\n",
                       si.seconds, bp_solve_status_name(si.status), si.gap,
                       s.objective / si.objective, s.seconds / si.seconds);
            bp_solution_free(&si);
        }
        bp_solution_free(&s);
        bp_problem_destroy(&p);
    }

    /* (b) */
    {
        size_t gens = quick ? 20 : 200;
        static const double budgets[3] = {3.0, 3.5, 4.25};
        double numel;
        bp_problem *p = bench_proxy_problem(2, 4.25, 1.15, &numel);
        double cap_bytes = p->capacity[0], cap_lat = p->capacity[1];
        bp_solution opt[3] = {{0}, {0}, {0}};
        double t_ilp = 0;
        for (int b = 0; b < 3; b++) {
            p->capacity[0] = floor(budgets[b] * numel / 8.0);
            p->capacity[1] = cap_lat;
            bp_ilp_options io;
            bp_ilp_options_default(&io);
            io.time_limit_s = 10;
            if (bp_solve_ilp(p, &io, &opt[b], &e))
                bench_die("ilp seed", &e);
            t_ilp += opt[b].seconds;
        }
        p->capacity[0] = cap_bytes;
        const int32_t *seeds[3] = {opt[0].choice, opt[1].choice, opt[2].choice};
        bp_nsga2_options o;
        bp_nsga2_options_default(&o);
        o.generations = gens;
        o.threads = threads;
        o.seeds = seeds;
        o.n_seeds = 3;
        bp_pareto_front *f = NULL;
        double t0 = now();
        int rc = bp_nsga2_run(p, &o, &f, &e);
        double tn = now() - t0;
        printf("\n(b) nsga2 on the 7B proxy (224 tensors x 53 formats, bytes + latency caps at 4.25 bpw),"
               " population %zu, %zu generations, %d threads\n", o.population, gens, nt);
        if (rc) {
            fprintf(stderr, "nsga2: %s\n", e.msg);
            rc_all = 1;
        } else {
            printf("time %.3f s, front %zu members; 3 ILP seeds took %.3f s (nsga2/ilp time %.2f)\n",
                   tn, f->n, t_ilp, tn / t_ilp);
            for (int b = 0; b < 3; b++) {
                double cap = floor(budgets[b] * numel / 8.0), best = INFINITY;
                for (size_t k = 0; k < f->n; k++)
                    if (f->objective[k * 3 + 1] <= cap && f->objective[k * 3] < best)
                        best = f->objective[k * 3];
                printf("  %.2f bpw: best front error %.9g, ILP %.9g (%s), ratio %.6f\n", budgets[b],
                       best, opt[b].objective, bp_solve_status_name(opt[b].status),
                       best / opt[b].objective);
            }
            /* Unseeded, for comparison. */
            o.seeds = NULL;
            o.n_seeds = 0;
            bp_pareto_front *g = NULL;
            t0 = now();
            if (bp_nsga2_run(p, &o, &g, &e) == BP_OK) {
                double tu = now() - t0;
                printf("unseeded: %.3f s, front %zu members\n", tu, g->n);
                for (int b = 0; b < 3; b++) {
                    double cap = floor(budgets[b] * numel / 8.0), best = INFINITY;
                    for (size_t k = 0; k < g->n; k++)
                        if (g->objective[k * 3 + 1] <= cap && g->objective[k * 3] < best)
                            best = g->objective[k * 3];
                    printf("  %.2f bpw: best front error %.9g, ratio to ILP %.6f\n", budgets[b], best,
                           best / opt[b].objective);
                }
            }
            bp_pareto_front_destroy(&g);
        }
        bp_pareto_front_destroy(&f);
        for (int b = 0; b < 3; b++)
            bp_solution_free(&opt[b]);
        bp_problem_destroy(&p);
    }

    /* (c) */
    {
        static const double budgets[3] = {3.0, 3.5, 4.25};
        static const double lat_slack[3] = {1.0, 1.0, 1.15};
        printf("\n(c) 2 constraints (bytes + latency) on the 7B proxy: lagrange vs ilp (10 s limit)\n");
        printf("%-6s %-10s %-10s %-10s %-10s %-10s %-10s %-12s %s\n", "bpw", "lag_s", "lag_gap",
               "ilp_s", "ilp_status", "ilp_gap", "time_ratio", "obj_ratio", "lag_bound/ilp_obj");
        for (int b = 0; b < (quick ? 1 : 3); b++) {
            double numel;
            bp_problem *p = bench_proxy_problem(2, budgets[b], lat_slack[b], &numel);
            bp_lagrange_options lo;
            bp_lagrange_options_default(&lo);
            lo.threads = threads;
            bp_solution sl = {0}, si = {0};
            int rl = bp_solve_lagrange(p, &lo, &sl, &e);
            if (rl) {
                fprintf(stderr, "lagrange: %s\n", e.msg);
                rc_all = 1;
            }
            bp_ilp_options io;
            bp_ilp_options_default(&io);
            io.time_limit_s = 10;
            int ri = bp_solve_ilp(p, &io, &si, &e);
            if (ri) {
                fprintf(stderr, "ilp: %s\n", e.msg);
                rc_all = 1;
            }
            printf("%-6.2f %-10.4f %-10.3g %-10.4f %-10s %-10.2g %-10.4f %-12.7f %.7f\n", budgets[b],
                   sl.seconds, sl.gap, si.seconds, bp_solve_status_name(si.status), si.gap,
                   sl.seconds / si.seconds, sl.objective / si.objective, sl.bound / si.objective);
            bp_solution_free(&sl);
            bp_solution_free(&si);
            bp_problem_destroy(&p);
        }
    }
    return rc_all;
}
