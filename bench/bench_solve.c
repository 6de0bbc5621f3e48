/* bench_solve: time the exact solvers on a 7B-shaped allocation problem.
 *
 * 224 tensors (32 layers x q,k,v,o [4096x4096], gate,up [11008x4096],
 * down [4096x11008]) x the whole format menu (53 formats), with exact-ish
 * packed sizes and synthetic errors that fall with bits, scaled by seeded
 * per-layer and per-tensor sensitivities. Budgets of 3.0, 3.5 and 4.25 bits
 * per weight; then the same with a second (synthetic latency) constraint.
 * Reports the median of several runs per solver and the DP/ILP time ratio.
 *
 * Usage: bench_solve [--quick] [--runs N] [--two-binding] [--limit S]
 *                    [--nodes N] [--cbc-limit S] [--verbose]
 * (--two-binding: only the last section; --limit: its ILP time limit,
 * default 60 s; --nodes: its node limit, default bp_ilp_options' (0), -1
 * none; --cbc-limit: CBC's, default 120 s; --verbose: GLPK's log)
 * The ILP runs with the default options (60 s deadline, node limit); a run
 * that stops early is reported with its status, gap and node count instead
 * of a median, and marked when the clock rather than the node limit
 * stopped it.
 *
 * Last section: both constraints binding with a real latency model - bytes
 * at 3.5 bpw and the h100 roofline decode latency (batch 1) capped 5 %
 * below that of the 3.5-bit bytes-only optimum. GLPK (bp_solve_ilp) and
 * CBC (`cbc`, on the LP file bp_solve_ilp exports) solve it in the same
 * run; CBC's assignment is re-evaluated on the problem for its objective.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/wait.h>

#include "bitplan/cost.h"
#include "bitplan/progress.h"
#include "bitplan/solve.h"

#include "bench_problem.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ---- two binding constraints: GLPK vs CBC ---- */

static int verbose;          /* --verbose: GLPK's log for this section */
static long node_limit;      /* --nodes: bp_ilp_options.node_limit (0 = default) */
static double cbc_limit = 120; /* --cbc-limit: CBC's own time limit */

/* The bytes-only problem with the h100 roofline decode latency (batch 1,
 * microseconds) of every (tensor, format) as a second cost. */
static bp_problem *with_roofline(const bp_problem *p1, const bench_fmt *menu, int64_t batch, bp_error *err)
{
    bp_hw_profile *hw = NULL;
    if (bp_hw_profile_builtin("h100", &hw, err))
        return NULL;
    bp_problem *p = bp_problem_new(2);
    for (size_t i = 0; p && i < p1->n_items; i++) {
        const double rows = bench_shapes[i % 7].rows, cols = bench_shapes[i % 7].cols;
        if (bp_problem_add_item(p, p1->item_name[i], err))
            goto fail;
        for (size_t k = p1->item_start[i]; k < p1->item_start[i + 1]; k++) {
            bp_format f;
            double c[2] = {p1->cost[k], 0};
            if (bp_format_parse(menu[p1->label[k]].name, &f, err) ||
                bp_cost_latency_us(hw, &f, (int64_t)rows, (int64_t)cols, BP_PHASE_DECODE, batch, &c[1], err) ||
                bp_problem_add_choice(p, p1->label[k], p1->error[k], c, err))
                goto fail;
        }
    }
    bp_hw_profile_destroy(&hw);
    return p;
fail:
    bp_hw_profile_destroy(&hw);
    bp_problem_destroy(&p);
    return NULL;
}

typedef struct cbc_result {
    int ran, optimal;
    double seconds, objective;
    bp_solution sol;
} cbc_result;

/* cbc FILE solve solu OUT: the first line is "Optimal - objective value V"
 * (or another status), then "index name value objcoef" per non-zero;
 * columns are x_<item>_<choice>. */
static void run_cbc(const bp_problem *p, const char *lp, double limit_s, cbc_result *r)
{
    memset(r, 0, sizeof *r);
    if (system("command -v cbc >/dev/null 2>&1") != 0)
        return;
    char cmd[1024], sol[600], line[256];
    snprintf(sol, sizeof sol, "%s.cbc.txt", lp);
    snprintf(cmd, sizeof cmd, "cbc %s sec %g solve solu %s >%s.cbc.log 2>&1", lp, limit_s, sol, lp);
    remove(sol);
    double t0 = bp_now_seconds();
    int st = system(cmd);
    r->seconds = bp_now_seconds() - t0;
    FILE *f = fopen(sol, "r");
    if (st == -1 || !WIFEXITED(st) || !f) {
        if (f)
            fclose(f);
        return;
    }
    r->ran = 1;
    if (fgets(line, sizeof line, f))
        r->optimal = !strncmp(line, "Optimal", 7);
    if (bp_solution_init(&r->sol, p->n_items, NULL) == BP_OK) {
        int idx;
        char name[64];
        double v;
        unsigned long i, c;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "%d %63s %lf", &idx, name, &v) == 3 && v > 0.5 &&
                sscanf(name, "x_%lu_%lu", &i, &c) == 2 && i < p->n_items)
                r->sol.choice[i] = (int32_t)c;
        r->objective = bp_solution_evaluate(p, &r->sol, NULL) == BP_OK ? r->sol.objective : NAN;
    }
    fclose(f);
}

static int two_binding_section(int runs, double limit_s, int64_t batch)
{
    bench_fmt menu[BENCH_MAX_FORMATS];
    bench_make_menu(menu);
    double numel;
    bp_error e;
    bp_problem *p1 = bench_proxy_problem(1, 3.5, 1.0, &numel);
    bp_problem *p2 = with_roofline(p1, menu, batch, &e);
    bp_solution s1 = {0}, s2 = {0};
    int rc = 0;
    if (!p2) {
        fprintf(stderr, "roofline: %s\n", e.msg);
        bp_problem_destroy(&p1);
        return 1;
    }
    if (bp_solve_ilp(p1, NULL, &s1, &e) || s1.status != BP_SOLVE_OPTIMAL) {
        fprintf(stderr, "bytes-only 3.5 bpw: %s\n", e.msg);
        rc = 1;
        goto out;
    }
    /* Latency of the bytes-only optimum, minus 5 %: the latency budget
     * then binds, and the bytes budget still does. */
    p2->capacity[0] = p1->capacity[0];
    bp_solution_evaluate(p2, &s1, NULL);
    double lat_ref = s1.cost_total[1];
    bp_problem_set_constraint(p2, 0, "bytes", p1->capacity[0], &e);
    bp_problem_set_constraint(p2, 1, "latency_us", 0.95 * lat_ref, &e);
    printf("\n2 constraints: bytes <= 3.5 bpw, h100 roofline decode latency (batch %lld) <= 0.95 x %.6g us "
           "(the 3.5-bpw bytes-only optimum's)\n", (long long)batch, lat_ref);
    char lp[64];
    snprintf(lp, sizeof lp, "bench_solve_2c_b%lld.lp", (long long)batch);
    bp_ilp_options o;
    bp_ilp_options_default(&o);
    o.time_limit_s = limit_s;
    o.export_lp = lp;
    o.verbose = verbose;
    o.node_limit = node_limit;
    double tg[64];
    int n = 0;
    for (int k = 0; k < runs && k < 64; k++) {
        int r = bp_solve_ilp(p2, &o, &s2, &e);
        o.export_lp = NULL; /* exported once; later runs time the solve alone */
        if (r) {
            fprintf(stderr, "ilp: %s\n", e.msg);
            rc = 1;
            goto out;
        }
        tg[n++] = s2.seconds;
        if (s2.status != BP_SOLVE_OPTIMAL)
            break;
    }
    /* The first run also wrote the LP file: time it only if it is the one. */
    double glpk_s = n > 1 ? median(tg + 1, n - 1) : tg[0];
    cbc_result cb;
    run_cbc(p2, lp, cbc_limit, &cb);
    printf("%-6s %-10s %-10s %-10s %-22s %s\n", "solver", "seconds", "status", "gap", "objective", "bytes / latency_us");
    printf("%-6s %-10.4f %-10s %-10.2g %-22.15g %.0f / %.6g\n", "glpk", glpk_s, bp_solve_status_name(s2.status),
           s2.gap, s2.objective, s2.cost_total[0], s2.cost_total[1]);
    printf("       %ld nodes%s\n", s2.nodes, s2.time_limited ? ", stopped by the time limit (time-dependent)" : "");
    printf("       slack: bytes %.3g %%, latency %.3g %% of capacity\n",
           100.0 * (1.0 - s2.cost_total[0] / p2->capacity[0]), 100.0 * (1.0 - s2.cost_total[1] / p2->capacity[1]));
    if (!cb.ran) {
        printf("cbc    not run (not installed, or it failed: see %s.cbc.log)\n", lp);
    } else {
        printf("%-6s %-10.4f %-10s %-10s %-22.15g %.0f / %.6g\n", "cbc", cb.seconds,
               cb.optimal ? "optimal" : "not-opt", "-", cb.objective, cb.sol.cost_total[0], cb.sol.cost_total[1]);
        printf("cbc/glpk time %.2f, objective glpk/cbc - 1 = %.3g\n", cb.seconds / glpk_s,
               s2.objective / cb.objective - 1.0);
        if (s2.status == BP_SOLVE_OPTIMAL && cb.optimal &&
            fabs(s2.objective - cb.objective) > 1e-9 * fabs(cb.objective)) {
            printf("  MISMATCH between the two proven optima\n");
            rc = 1;
        }
    }
    bp_solution_free(&cb.sol);
out:
    bp_solution_free(&s1);
    bp_solution_free(&s2);
    bp_problem_destroy(&p1);
    bp_problem_destroy(&p2);
    return rc;
}

int main(int argc, char **argv)
{
    int quick = 0, runs = 5, only_2c = 0;
    double limit_2c = 60.0;
    double ilp_limit = 60.0; /* s; the default: a hard joint budget stops on the node limit */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = 1;
        else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
            runs = atoi(argv[++i]);
        else if (strcmp(argv[i], "--two-binding") == 0)
            only_2c = 1;
        else if (strcmp(argv[i], "--verbose") == 0)
            verbose = 1;
        else if (strcmp(argv[i], "--limit") == 0 && i + 1 < argc)
            limit_2c = atof(argv[++i]);
        else if (strcmp(argv[i], "--nodes") == 0 && i + 1 < argc)
            node_limit = atol(argv[++i]);
        else if (strcmp(argv[i], "--cbc-limit") == 0 && i + 1 < argc)
            cbc_limit = atof(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--quick] [--runs N] [--two-binding] [--limit S] [--nodes N] [--cbc-limit S] [--verbose]\n", argv[0]);
            return 2;
        }
    }
    if (quick)
        runs = 1;
    if (runs < 1)
        runs = 1;
    static const double budgets[] = {3.0, 3.5, 4.25};
    static const double lat_slack[] = {1.0, 1.0, 1.15};
    int nb = quick ? 1 : 3;
    int rc_all = 0;
    bench_fmt menu[BENCH_MAX_FORMATS];
    size_t nf = bench_make_menu(menu);
    printf("bench_solve: %d tensors x %zu formats, median of %d run(s)\n", BENCH_N_LAYERS * 7, nf, runs);
    if (only_2c)
        return two_binding_section(runs + 1, limit_2c, 1) | two_binding_section(runs + 1, limit_2c, 256);
    printf("%-4s %-6s %-9s %-10s %-10s %-22s %-10s %s\n", "m", "bpw", "ilp_s", "status", "gap",
           "objective", "dp_s", "dp/ilp");
    for (size_t m = 1; m <= 2; m++) {
        for (int b = 0; b < nb; b++) {
            double numel;
            bp_problem *p = bench_proxy_problem(m, budgets[b], lat_slack[b], &numel);
            double ti[64], td[64];
            bp_solution si = {0}, sd = {0};
            bp_error e;
            int ri = 0, rd = BP_EUNSUPPORTED;
            for (int k = 0; k < runs && k < 64; k++) {
                bp_ilp_options o;
                bp_ilp_options_default(&o);
                o.time_limit_s = ilp_limit;
                ri = bp_solve_ilp(p, &o, &si, &e);
                ti[k] = si.seconds;
                if (ri) {
                    fprintf(stderr, "ilp m=%zu bpw=%.2f: %s\n", m, budgets[b], e.msg);
                    rc_all = 1;
                    break;
                }
                if (si.status != BP_SOLVE_OPTIMAL)
                    break; /* hit the time limit: one run says enough */
            }
            long dp_states = 200000000L;
            if (m == 1) {
                for (int k = 0; k < runs && k < 64; k++) {
                    rd = bp_solve_dp(p, dp_states, &sd, &e);
                    td[k] = sd.seconds;
                    if (rd) {
                        fprintf(stderr, "dp bpw=%.2f: %s\n", budgets[b], e.msg);
                        break;
                    }
                }
            }
            int ni = si.status == BP_SOLVE_OPTIMAL ? runs : 1;
            double mi = ri ? NAN : median(ti, ni);
            double md = rd ? NAN : median(td, runs);
            printf("%-4zu %-6.2f %-9.4f %-10s %-10.2g %-22.15g ", m, budgets[b], mi,
                   ri ? bp_error_name(ri) : bp_solve_status_name(si.status), si.gap, si.objective);
            if (m == 1 && !rd)
                printf("%-10.4f %-10.2f\n", md, md / mi);
            else
                printf("%-10s %-10s\n", m == 1 ? bp_error_name(rd) : "-", "-");
            if (m == 1 && !ri && !rd) {
                double rel = fabs(si.objective - sd.objective) / fmax(fabs(sd.objective), 1e-300);
                if (rel > 1e-9) {
                    printf("  MISMATCH: ilp %.17g dp %.17g (rel %.3g)\n", si.objective, sd.objective, rel);
                    rc_all = 1;
                }
            }
            if (!ri) {
                printf("     bytes %.0f / %.0f (%.4f bpw)", si.cost_total[0], p->capacity[0],
                       8.0 * si.cost_total[0] / numel);
                if (m > 1)
                    printf(", latency %.0f / %.0f ns", si.cost_total[1], p->capacity[1]);
                printf(", %ld nodes%s\n", si.nodes, si.time_limited ? " (stopped by the time limit)" : "");
            }
            bp_solution_free(&si);
            bp_solution_free(&sd);
            bp_problem_destroy(&p);
        }
    }
    /* Batch 1 is what the brief asks for; there the roofline is memory
     * bound for every format, latency is affine in bytes and the two rows
     * are parallel. At batch 256 low-bit formats turn compute bound in the
     * fp16 class while int8/fp8 run at twice the peak: the rows conflict. */
    rc_all |= two_binding_section(runs + 1, limit_2c, 1);
    rc_all |= two_binding_section(runs + 1, limit_2c, 256);
    return rc_all;
}
