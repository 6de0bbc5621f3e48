/* bitplan pareto: the error / size (/ latency) trade-off of a sensitivity
 * table as a JSON file and a PNG plot. docs/pareto.md. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bitplan/cost.h"
#include "bitplan/format.h"
#include "bitplan/job.h"
#include "bitplan/nsga2.h"
#include "bitplan/solve.h"
#include "bitplan/table.h"
#include "cli.h"

#define CMD "pareto"
#define PARETO_SCHEMA "bitplan.pareto/v1"
#define DEFAULT_POINTS_EXACT 50
#define DEFAULT_POINTS_NSGA2 200
#define MAX_POINTS 100000

typedef enum search_kind { SEARCH_AUTO = 0, SEARCH_EXACT, SEARCH_NSGA2 } search_kind;

typedef struct pareto_args {
    const char *table_path, *formats, *profile, *out_path, *png_path;
    int metric;         /* -1: the table's best */
    int method;         /* -1: rtn, or gptq with metric gptq; else bp_quant_method */
    search_kind search;
    long points, generations, population, seed;
    int quiet;
} pareto_args;

/* A front member or a uniform format. */
typedef struct point {
    double bytes, error, latency_us;
    int32_t *choice;    /* front: per item, local choice index (owned) */
    const char *format; /* uniform: the format's name (owned by the table) */
} point;

typedef struct pareto_run {
    const pareto_args *a;
    bp_table *table;
    int metric;
    bp_quant_method method;
    bp_problem *bytes_prob; /* bytes only, capacity varied by the exact sweep */
    bp_problem *prob;       /* bytes (+ latency): what NSGA-II sees */
    bp_hw_profile *hw;
    uint64_t params;        /* weights covered, for bits per weight */
    const char *search_name;
    point *front, *uniform;
    size_t n_front, n_uniform;
} pareto_run;

static void pareto_usage(FILE *out)
{
    fprintf(out,
            "usage: bitplan pareto --table T [--out front.json] [--png front.png] [options]\n"
            "\n"
            "The trade-off between size and error of a sensitivity table: the Pareto\n"
            "front (every plan that no other plan beats on both), the uniform formats\n"
            "for comparison, as JSON (schema bitplan.pareto/v1) and as a PNG plot drawn\n"
            "by gnuplot. docs/pareto.md.\n"
            "\n"
            "options:\n"
            "  --table T            sensitivity table (docs/table-format.md), e.g. from\n"
            "                       'bitplan plan --table T'; required\n"
            "  --metric NAME        error metric: mse, hdiag, hfull, gptq, dkl (default: the\n"
            "                       table's most informative column: dkl, gptq, hfull,\n"
            "                       hdiag, then mse)\n"
            "  --method rtn|gptq|gptq_act\n"
            "                       weights the errors were measured on (default rtn;\n"
            "                       gptq with --metric gptq)\n"
            "  --formats LIST       only these formats (comma-separated), default all\n"
            "  --profile NAME|FILE  hardware profile (h100, a100, rtx4090, cpu, or a JSON\n"
            "                       file): adds roofline decode latency (batch 1) as a\n"
            "                       third objective; implies --search nsga2\n"
            "  --search exact|nsga2 exact: optimal plans at --points evenly spaced byte\n"
            "                       budgets (default without --profile); nsga2: an\n"
            "                       evolutionary search seeded with exact plans\n"
            "  --points N           exact: number of budgets (default %d); nsga2: front\n"
            "                       size cap (default %d)\n"
            "  --generations N      NSGA-II generations (default 200)\n"
            "  --population N       NSGA-II population, even (default 100)\n"
            "  --seed S             NSGA-II random seed (default 1)\n"
            "  --out FILE           front as JSON (default pareto.json)\n"
            "  --png FILE           plot: bits per weight against error (needs gnuplot)\n"
            "  --quiet              no progress on stderr\n"
            "  -h, --help           show this help\n"
            "\n"
            "Exit status: 0 success; 1 failure (bad table, solver failure, or the PNG\n"
            "could not be drawn - the JSON is then still complete); 2 usage error.\n",
            DEFAULT_POINTS_EXACT, DEFAULT_POINTS_NSGA2);
}

/* ---- arguments ---- */

static int parse_args(int argc, char **argv, pareto_args *a)
{
    enum { O_TABLE = 1, O_METRIC, O_METHOD, O_FORMATS, O_PROFILE, O_SEARCH, O_POINTS, O_GENS,
           O_POP, O_SEED, O_OUT, O_PNG, O_QUIET };
    static const struct option opts[] = {
        {"table", required_argument, NULL, O_TABLE},
        {"metric", required_argument, NULL, O_METRIC},
        {"method", required_argument, NULL, O_METHOD},
        {"formats", required_argument, NULL, O_FORMATS},
        {"profile", required_argument, NULL, O_PROFILE},
        {"search", required_argument, NULL, O_SEARCH},
        {"points", required_argument, NULL, O_POINTS},
        {"generations", required_argument, NULL, O_GENS},
        {"population", required_argument, NULL, O_POP},
        {"seed", required_argument, NULL, O_SEED},
        {"out", required_argument, NULL, O_OUT},
        {"png", required_argument, NULL, O_PNG},
        {"quiet", no_argument, NULL, O_QUIET},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(a, 0, sizeof *a);
    a->metric = -1;
    a->method = -1;
    a->generations = 200;
    a->population = 100;
    a->seed = 1;
    a->out_path = "pareto.json";
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_TABLE: a->table_path = optarg; break;
        case O_METRIC:
            a->metric = bp_table_metric_from_name(optarg);
            if (a->metric < 0 || a->metric >= BP_METRIC_N_ERROR)
                return bp_cli_usage_error(CMD, "--metric: unknown metric '%s' (mse, hdiag, hfull, gptq, dkl)",
                                          optarg);
            break;
        case O_METHOD:
            a->method = bp_table_method_from_name(optarg);
            if (a->method < 0)
                return bp_cli_usage_error(CMD, "--method: '%s' is not rtn, gptq or gptq_act", optarg);
            break;
        case O_FORMATS: a->formats = optarg; break;
        case O_PROFILE: a->profile = optarg; break;
        case O_SEARCH:
            if (!strcmp(optarg, "exact"))
                a->search = SEARCH_EXACT;
            else if (!strcmp(optarg, "nsga2"))
                a->search = SEARCH_NSGA2;
            else
                return bp_cli_usage_error(CMD, "--search: '%s' is not exact or nsga2", optarg);
            break;
        case O_POINTS:
            if (bp_cli_parse_long(CMD, "--points", optarg, 2, MAX_POINTS, &a->points))
                return BP_EXIT_USAGE;
            break;
        case O_GENS:
            if (bp_cli_parse_long(CMD, "--generations", optarg, 0, 1000000, &a->generations))
                return BP_EXIT_USAGE;
            break;
        case O_POP:
            if (bp_cli_parse_long(CMD, "--population", optarg, 4, 100000, &a->population))
                return BP_EXIT_USAGE;
            if (a->population % 2)
                return bp_cli_usage_error(CMD, "--population: %ld is odd (NSGA-II pairs parents)",
                                          a->population);
            break;
        case O_SEED:
            if (bp_cli_parse_long(CMD, "--seed", optarg, 0, LONG_MAX, &a->seed))
                return BP_EXIT_USAGE;
            break;
        case O_OUT: a->out_path = optarg; break;
        case O_PNG: a->png_path = optarg; break;
        case O_QUIET: a->quiet = 1; break;
        case 'h': pareto_usage(stdout); return BP_EXIT_OK;
        default:
            return bp_cli_usage_error(CMD, "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return bp_cli_usage_error(CMD, "unexpected argument '%s'", argv[optind]);
    if (!a->table_path)
        return bp_cli_usage_error(CMD, "--table T is required");
    if (!a->out_path[0] || (a->png_path && !a->png_path[0]))
        return bp_cli_usage_error(CMD, "--out and --png need a file name");
    if (a->png_path) {
        /* The path is quoted into a gnuplot script. */
        for (const char *s = a->png_path; *s; s++)
            if ((unsigned char)*s < 0x20)
                return bp_cli_usage_error(CMD, "--png: control character in the file name");
    }
    if (a->profile && a->search == SEARCH_EXACT)
        return bp_cli_usage_error(CMD, "--profile adds a third objective: use --search nsga2 (the default "
                                       "with --profile)");
    if (a->search == SEARCH_AUTO)
        a->search = a->profile ? SEARCH_NSGA2 : SEARCH_EXACT;
    if (a->points == 0)
        a->points = a->search == SEARCH_EXACT ? DEFAULT_POINTS_EXACT : DEFAULT_POINTS_NSGA2;
    if (a->metric == BP_METRIC_GPTQ && a->method == BP_METHOD_RTN)
        return bp_cli_usage_error(CMD, "--metric gptq is measured on GPTQ weights: drop --method rtn");
    return -1;
}

/* ---- table, metric, problems ---- */

/* A copy of t holding only rows whose format is in the list. */
static int filter_formats(bp_table **t, const char *list, bp_error *err)
{
    bp_format menu[128];
    size_t n_menu = 0;
    int rc = bp_job_parse_formats(list, menu, sizeof menu / sizeof menu[0], &n_menu, err);
    if (rc)
        return rc;
    bp_table *out = bp_table_new();
    if (!out)
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    for (bp_metric m = 0; m < BP_METRIC_COUNT && !rc; m++)
        if (bp_table_has_metric(*t, m))
            rc = bp_table_declare_metric(out, m, err);
    for (size_t r = 0; r < bp_table_count(*t) && !rc; r++) {
        bp_table_row row;
        bp_table_get_row(*t, r, &row);
        for (size_t k = 0; k < n_menu; k++)
            if (!strcmp(menu[k].name, row.format)) {
                rc = bp_table_add_row(out, &row, err);
                break;
            }
    }
    for (size_t i = 0; i < bp_table_meta_count(*t) && !rc; i++) {
        const char *key, *value;
        bp_table_meta_at(*t, i, &key, &value);
        rc = bp_table_set_meta(out, key, value, err);
    }
    if (!rc && bp_table_count(out) == 0)
        rc = bp_error_set(err, BP_EINVAL, "no row of the table has a format in --formats '%s'", list);
    if (rc) {
        bp_table_destroy(&out);
        return rc;
    }
    bp_table_destroy(t);
    *t = out;
    return BP_OK;
}

static int metric_has_values(const bp_table *t, bp_metric m, bp_quant_method method)
{
    for (size_t r = 0; r < bp_table_count(t); r++) {
        bp_table_row row;
        bp_table_get_row(t, r, &row);
        if (row.method == method && !isnan(row.metric[m]))
            return 1;
    }
    return 0;
}

/* The most informative error the table holds: the KL of the model output
 * first, then the Hessian-based errors, then plain weight error. */
static int choose_metric(pareto_run *run, bp_error *err)
{
    static const bp_metric order[] = {BP_METRIC_DKL, BP_METRIC_GPTQ, BP_METRIC_HFULL, BP_METRIC_HDIAG,
                                      BP_METRIC_MSE};
    const pareto_args *a = run->a;
    if (a->metric >= 0) {
        run->metric = a->metric;
        run->method = a->method >= 0 ? (bp_quant_method)a->method
                      : a->metric == BP_METRIC_GPTQ ? BP_METHOD_GPTQ : BP_METHOD_RTN;
        return BP_OK;
    }
    run->method = a->method >= 0 ? (bp_quant_method)a->method : BP_METHOD_RTN;
    for (size_t k = 0; k < sizeof order / sizeof order[0]; k++)
        if (metric_has_values(run->table, order[k], run->method)) {
            run->metric = (int)order[k];
            return BP_OK;
        }
    return bp_error_set(err, BP_EINVAL, "%s: no error metric has a value for %s weights", a->table_path,
                        bp_table_method_name(run->method));
}

static int row_of_choice(const pareto_run *run, size_t k, bp_table_row *row)
{
    return bp_table_get_row(run->table, (size_t)run->bytes_prob->label[k], row);
}

/* Weights of every tensor, so sizes convert to bits per weight. */
static int count_params(pareto_run *run, bp_error *err)
{
    const bp_problem *p = run->bytes_prob;
    run->params = 0;
    for (size_t i = 0; i < p->n_items; i++) {
        bp_table_row row;
        row_of_choice(run, p->item_start[i], &row);
        uint64_t n = row.params ? row.params : (uint64_t)row.rows * (uint64_t)row.cols;
        if (n == 0)
            return bp_error_set(err, BP_EINVAL,
                                "%s: tensor '%s' has no rows/cols/params, needed for bits per weight",
                                run->a->table_path, row.tensor);
        run->params += n;
    }
    return BP_OK;
}

static int choice_latency(const pareto_run *run, size_t k, double *us, bp_error *err)
{
    bp_table_row row;
    row_of_choice(run, k, &row);
    if (row.rows <= 0 || row.cols <= 0)
        return bp_error_set(err, BP_EINVAL, "%s: tensor '%s' has no rows/cols, needed for latency",
                            run->a->table_path, row.tensor);
    bp_format f;
    int rc = bp_format_parse(row.format, &f, err);
    if (!rc)
        rc = bp_cost_latency_us(run->hw, &f, row.rows, row.cols, BP_PHASE_DECODE, 1, us, err);
    if (rc)
        return bp_error_prefix(err, "tensor '%s', format '%s'", row.tensor, row.format);
    return BP_OK;
}

/* The problem NSGA-II explores: bytes, plus latency with a profile. Its
 * capacities are the largest totals, so they never cut the trade-off. */
static int build_search_problem(pareto_run *run, bp_error *err)
{
    const bp_problem *b = run->bytes_prob;
    size_t m = run->hw ? 2 : 1;
    bp_problem *p = bp_problem_new(m);
    if (!p)
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    double cap[2] = {0, 0};
    int rc = BP_OK;
    for (size_t i = 0; i < b->n_items && !rc; i++) {
        rc = bp_problem_add_item(p, b->item_name[i], err);
        double most[2] = {0, 0};
        for (size_t k = b->item_start[i]; k < b->item_start[i + 1] && !rc; k++) {
            double c[2] = {b->cost[k], 0};
            if (m > 1)
                rc = choice_latency(run, k, &c[1], err);
            if (!rc)
                rc = bp_problem_add_choice(p, b->label[k], b->error[k], c, err);
            for (size_t j = 0; j < m; j++)
                most[j] = fmax(most[j], c[j]);
        }
        for (size_t j = 0; j < m; j++)
            cap[j] += most[j];
    }
    if (!rc)
        rc = bp_problem_set_constraint(p, 0, "bytes", cap[0], err);
    if (!rc && m > 1)
        rc = bp_problem_set_constraint(p, 1, "latency_us", cap[1], err);
    if (rc) {
        bp_problem_destroy(&p);
        return rc;
    }
    run->prob = p;
    return BP_OK;
}

/* ---- fronts ---- */

static void points_free(point *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i].choice);
    free(v);
}

static int point_cmp(const void *x, const void *y)
{
    const point *a = x, *b = y;
    if (a->bytes != b->bytes)
        return a->bytes < b->bytes ? -1 : 1;
    if (a->error != b->error)
        return a->error < b->error ? -1 : 1;
    if (a->latency_us != b->latency_us)
        return a->latency_us < b->latency_us ? -1 : 1;
    if (a->format && b->format)
        return strcmp(a->format, b->format);
    return 0;
}

/* Totals of an assignment over the search problem, summed in item order
 * from 0.0 like bp_solution_evaluate, so they equal the table's cells
 * added up tensor by tensor. */
static void assignment_totals(const bp_problem *p, const int32_t *choice, point *pt)
{
    size_t m = p->n_constraints;
    double e = 0.0, c[2] = {0.0, 0.0};
    for (size_t i = 0; i < p->n_items; i++) {
        size_t k = p->item_start[i] + (size_t)choice[i];
        e += p->error[k];
        for (size_t j = 0; j < m && j < 2; j++)
            c[j] += p->cost[k * m + j];
    }
    pt->error = e;
    pt->bytes = c[0];
    pt->latency_us = m > 1 ? c[1] : 0.0;
}

/* Sort by bytes and drop members that another one weakly dominates
 * (equal totals included), so the front strictly improves error as bytes
 * grow, or with latency, no member is dominated or repeated. */
static void front_normalize(pareto_run *run)
{
    qsort(run->front, run->n_front, sizeof *run->front, point_cmp);
    int three = run->hw != NULL;
    size_t w = 0;
    for (size_t k = 0; k < run->n_front; k++) {
        point *q = &run->front[k];
        int drop = 0;
        for (size_t t = 0; t < w && !drop; t++) {
            const point *o = &run->front[t];
            drop = o->bytes <= q->bytes && o->error <= q->error &&
                   (!three || o->latency_us <= q->latency_us);
        }
        if (drop) {
            free(q->choice);
            continue;
        }
        run->front[w++] = *q;
    }
    run->n_front = w;
}

/* Optimal plans at n evenly spaced byte budgets between the cheapest plan
 * and the most accurate one: each is exact (DP, or the ILP when the DP's
 * state space is too large), so every point lies on the true front. */
static int exact_points(pareto_run *run, size_t n, point **out, size_t *n_out, bp_error *err)
{
    bp_problem *p = run->bytes_prob;
    double lo = 0.0, hi = 0.0;
    for (size_t i = 0; i < p->n_items; i++) {
        size_t cheap = p->item_start[i], best = p->item_start[i];
        for (size_t k = p->item_start[i]; k < p->item_start[i + 1]; k++) {
            if (p->cost[k] < p->cost[cheap])
                cheap = k;
            if (p->error[k] < p->error[best] || (p->error[k] == p->error[best] && p->cost[k] < p->cost[best]))
                best = k;
        }
        lo += p->cost[cheap];
        hi += p->cost[best];
    }
    point *v = calloc(n, sizeof *v);
    if (!v)
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    size_t got = 0;
    int rc = BP_OK;
    bp_solution s = {0};
    for (size_t b = 0; b < n && !rc; b++) {
        double cap = b + 1 == n ? hi : floor(lo + (hi - lo) * (double)b / (double)(n - 1));
        if ((rc = bp_problem_set_constraint(p, 0, "bytes", cap, err)))
            break;
        rc = bp_solve_dp(p, 0, &s, err);
        if (rc == BP_ENOMEM) {
            bp_ilp_options o;
            bp_ilp_options_default(&o);
            rc = bp_solve_ilp(p, &o, &s, err);
        }
        if (!rc && s.status != BP_SOLVE_OPTIMAL)
            rc = bp_error_set(err, BP_ESOLVER, "budget %.0f bytes: the solver stopped at %s (gap %.3g)",
                              cap, bp_solve_status_name(s.status), s.gap);
        if (rc)
            break;
        v[got].choice = malloc(p->n_items * sizeof *v[got].choice);
        if (!v[got].choice) {
            rc = bp_error_set(err, BP_ENOMEM, "out of memory");
            break;
        }
        memcpy(v[got].choice, s.choice, p->n_items * sizeof *s.choice);
        assignment_totals(run->prob, v[got].choice, &v[got]);
        got++;
        if (!run->a->quiet)
            fprintf(stderr, "\rbitplan pareto: exact budget %zu/%zu", b + 1, n);
    }
    if (!run->a->quiet)
        fprintf(stderr, "\n");
    bp_solution_free(&s);
    if (rc) {
        points_free(v, got);
        return bp_error_prefix(err, "exact front");
    }
    *out = v;
    *n_out = got;
    return BP_OK;
}

static int nsga2_front(pareto_run *run, point *seeds, size_t n_seeds, bp_error *err)
{
    const pareto_args *a = run->a;
    bp_nsga2_options o;
    bp_nsga2_options_default(&o);
    o.population = (size_t)a->population;
    o.generations = (size_t)a->generations;
    o.seed = (uint64_t)a->seed;
    o.use_caps = 0;
    o.archive_max = (size_t)a->points;
    const int32_t **sv = malloc((n_seeds ? n_seeds : 1) * sizeof *sv);
    if (!sv)
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    for (size_t k = 0; k < n_seeds; k++)
        sv[k] = seeds[k].choice;
    o.seeds = sv;
    o.n_seeds = n_seeds;
    bp_pareto_front *f = NULL;
    int rc = bp_nsga2_run(run->prob, &o, &f, err);
    free(sv);
    if (rc)
        return bp_error_prefix(err, "nsga2");
    size_t n = f->n_items;
    run->front = calloc(f->n ? f->n : 1, sizeof *run->front);
    if (!run->front) {
        bp_pareto_front_destroy(&f);
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    }
    for (size_t k = 0; k < f->n; k++) {
        point *q = &run->front[run->n_front];
        q->choice = malloc(n * sizeof *q->choice);
        if (!q->choice) {
            bp_pareto_front_destroy(&f);
            return bp_error_set(err, BP_ENOMEM, "out of memory");
        }
        memcpy(q->choice, f->choice + k * n, n * sizeof *q->choice);
        assignment_totals(run->prob, q->choice, q);
        run->n_front++;
    }
    bp_pareto_front_destroy(&f);
    return BP_OK;
}

static int compute_front(pareto_run *run, bp_error *err)
{
    const pareto_args *a = run->a;
    if (a->search == SEARCH_EXACT) {
        run->search_name = "exact";
        int rc = exact_points(run, (size_t)a->points, &run->front, &run->n_front, err);
        if (!rc)
            front_normalize(run);
        return rc;
    }
    /* Exact plans seed the search: NSGA-II alone lands far above the
     * optimal error (bench/RESULTS.md), seeded it keeps them. */
    run->search_name = "nsga2";
    size_t n_seeds = (size_t)a->population / 2;
    if (n_seeds > (size_t)a->points)
        n_seeds = (size_t)a->points;
    if (n_seeds > 16)
        n_seeds = 16;
    point *seeds = NULL;
    size_t got = 0;
    int rc = exact_points(run, n_seeds, &seeds, &got, err);
    if (!rc)
        rc = nsga2_front(run, seeds, got, err);
    points_free(seeds, got);
    if (!rc)
        front_normalize(run);
    return rc;
}

/* Every format that all tensors have a value for, as one point each. */
static int uniform_points(pareto_run *run, bp_error *err)
{
    const bp_problem *p = run->prob;
    size_t first = p->item_start[0], nf = p->item_start[1] - first;
    run->uniform = calloc(nf, sizeof *run->uniform);
    int32_t *pick = malloc(p->n_items * sizeof *pick);
    if (!run->uniform || !pick) {
        free(pick);
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    }
    for (size_t c = 0; c < nf; c++) {
        bp_table_row r0;
        row_of_choice(run, first + c, &r0);
        int everywhere = 1;
        for (size_t i = 0; i < p->n_items && everywhere; i++) {
            pick[i] = -1;
            for (size_t k = p->item_start[i]; k < p->item_start[i + 1]; k++) {
                bp_table_row r;
                row_of_choice(run, k, &r);
                if (!strcmp(r.format, r0.format)) {
                    pick[i] = (int32_t)(k - p->item_start[i]);
                    break;
                }
            }
            everywhere = pick[i] >= 0;
        }
        if (!everywhere)
            continue;
        point *u = &run->uniform[run->n_uniform++];
        assignment_totals(p, pick, u);
        u->format = r0.format;
    }
    free(pick);
    qsort(run->uniform, run->n_uniform, sizeof *run->uniform, point_cmp);
    return BP_OK;
}

/* ---- JSON ---- */

static double bits_per_weight(const pareto_run *run, double bytes)
{
    return 8.0 * bytes / (double)run->params;
}

static void put(json_t *o, const char *key, json_t *v, int *bad)
{
    if (!v || json_object_set_new(o, key, v))
        *bad = 1;
}

static json_t *point_json(const pareto_run *run, const point *q, int *bad)
{
    json_t *o = json_object();
    if (!o) {
        *bad = 1;
        return NULL;
    }
    if (q->format)
        put(o, "format", json_string(q->format), bad);
    put(o, "bits_per_weight", json_real(bits_per_weight(run, q->bytes)), bad);
    put(o, "bytes", json_integer((json_int_t)q->bytes), bad);
    put(o, "error", json_real(q->error), bad);
    if (run->hw)
        put(o, "latency_us", json_real(q->latency_us), bad);
    if (q->choice) {
        json_t *asg = json_object();
        const bp_problem *p = run->prob;
        for (size_t i = 0; asg && i < p->n_items; i++) {
            bp_table_row row;
            row_of_choice(run, p->item_start[i] + (size_t)q->choice[i], &row);
            put(asg, p->item_name[i], json_string(row.format), bad);
        }
        put(o, "assignment", asg, bad);
    }
    return o;
}

static json_t *points_json(const pareto_run *run, const point *v, size_t n, int *bad)
{
    json_t *arr = json_array();
    for (size_t k = 0; arr && k < n; k++)
        if (json_array_append_new(arr, point_json(run, &v[k], bad)))
            *bad = 1;
    if (!arr)
        *bad = 1;
    return arr;
}

static json_t *meta_or_null(const bp_table *t, const char *key)
{
    const char *v = bp_table_get_meta(t, key);
    return v ? json_string(v) : json_null();
}

static char *front_json_text(const pareto_run *run, bp_error *err)
{
    const pareto_args *a = run->a;
    int bad = 0;
    json_t *root = json_object();
    if (!root) {
        bp_error_set(err, BP_ENOMEM, "out of memory");
        return NULL;
    }
    put(root, "schema", json_string(PARETO_SCHEMA), &bad);
    put(root, "model", meta_or_null(run->table, "model"), &bad);
    put(root, "model_hash", meta_or_null(run->table, "model_hash"), &bad);
    put(root, "metric", json_string(bp_table_metric_name((bp_metric)run->metric)), &bad);
    put(root, "method", json_string(bp_table_method_name(run->method)), &bad);
    put(root, "search", json_string(run->search_name), &bad);
    if (a->search == SEARCH_NSGA2) {
        put(root, "generations", json_integer(a->generations), &bad);
        put(root, "population", json_integer(a->population), &bad);
        put(root, "seed", json_integer(a->seed), &bad);
    }
    put(root, "profile", run->hw ? json_string(run->hw->name) : json_null(), &bad);
    put(root, "latency", run->hw ? json_string("roofline decode, batch 1") : json_null(), &bad);
    put(root, "tensors", json_integer((json_int_t)run->prob->n_items), &bad);
    put(root, "params", json_integer((json_int_t)run->params), &bad);
    put(root, "front", points_json(run, run->front, run->n_front, &bad), &bad);
    put(root, "uniform", points_json(run, run->uniform, run->n_uniform, &bad), &bad);
    char *text = bad ? NULL : json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(17));
    json_decref(root);
    if (!text)
        bp_error_set(err, BP_ENOMEM, "out of memory while serializing the front");
    return text;
}

/* Temporary file next to the target, renamed into place: readers never
 * see half a file. */
static int write_file_atomic(const char *path, const char *text, bp_error *err)
{
    size_t len = strlen(path) + 32;
    char *tmp = malloc(len);
    if (!tmp)
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    snprintf(tmp, len, "%s.tmp.%ld", path, (long)getpid());
    FILE *fp = fopen(tmp, "wb");
    if (!fp) {
        int e = errno;
        free(tmp);
        return bp_error_set(err, BP_EIO, "%s: cannot write: %s", path, strerror(e));
    }
    size_t n = strlen(text);
    int ok = fwrite(text, 1, n, fp) == n && fputc('\n', fp) != EOF;
    ok = (fclose(fp) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        remove(tmp);
        free(tmp);
        return bp_error_set(err, BP_EIO, "%s: write failed: %s", path, strerror(e));
    }
    free(tmp);
    return BP_OK;
}

/* ---- PNG through gnuplot ---- */

/* gnuplot single-quoted string: '' is a literal quote. */
static void put_quoted(FILE *fp, const char *s)
{
    fputc('\'', fp);
    for (; *s; s++) {
        if (*s == '\'')
            fputc('\'', fp);
        fputc(*s, fp);
    }
    fputc('\'', fp);
}

/* Which uniform formats get a label: those no other uniform format beats
 * on both size and error, and then only one per 1/30 of the x range, or
 * the 53 names of the full menu would overlap. Uniform points are sorted
 * by bytes, so this is one pass. */
static void uniform_labels(const pareto_run *run, int *label)
{
    double span = 0, last = -INFINITY;
    if (run->n_uniform)
        span = bits_per_weight(run, run->uniform[run->n_uniform - 1].bytes) -
               bits_per_weight(run, run->uniform[0].bytes);
    for (size_t u = 0; u < run->n_uniform; u++) {
        const point *q = &run->uniform[u];
        int beaten = 0;
        for (size_t k = 0; k < run->n_uniform && !beaten; k++) {
            const point *o = &run->uniform[k];
            beaten = k != u && o->bytes <= q->bytes && o->error <= q->error &&
                     (o->bytes < q->bytes || o->error < q->error || k < u);
        }
        double x = bits_per_weight(run, q->bytes);
        label[u] = !beaten && x - last >= span / 30.0;
        if (label[u])
            last = x;
    }
}

/* Log scale when the positive errors span more than two decades. Zero
 * errors (lossless formats) cannot be drawn on it and are left out. */
static int want_log_scale(const pareto_run *run)
{
    double lo = INFINITY, hi = 0;
    for (size_t k = 0; k < run->n_front; k++)
        if (run->front[k].error > 0) {
            lo = fmin(lo, run->front[k].error);
            hi = fmax(hi, run->front[k].error);
        }
    for (size_t k = 0; k < run->n_uniform; k++)
        if (run->uniform[k].error > 0) {
            lo = fmin(lo, run->uniform[k].error);
            hi = fmax(hi, run->uniform[k].error);
        }
    return hi > 0 && hi > 100.0 * lo;
}

static void write_gnuplot_script(const pareto_run *run, FILE *fp)
{
    const char *metric = bp_table_metric_name((bp_metric)run->metric);
    fprintf(fp, "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) "
                "{ set terminal pngcairo size 1000,650 } else { set terminal png size 1000,650 }\n");
    fprintf(fp, "set output ");
    put_quoted(fp, run->a->png_path);
    fprintf(fp, "\nset title 'Pareto front (%s, %s weights%s%s)' noenhanced\n", metric,
            bp_table_method_name(run->method), run->hw ? ", colour = decode latency on " : "",
            run->hw ? run->hw->name : "");
    fprintf(fp, "set xlabel 'bits per weight'\nset ylabel '%s' noenhanced\n", metric);
    fprintf(fp, "set grid\nset key top right\n");
    if (want_log_scale(run))
        fprintf(fp, "set logscale y\n");
    if (run->hw)
        fprintf(fp, "set cblabel 'latency (us)'\n");
    fprintf(fp, "$front << EOD\n");
    for (size_t k = 0; k < run->n_front; k++)
        fprintf(fp, "%.17g %.17g %.17g\n", bits_per_weight(run, run->front[k].bytes), run->front[k].error,
                run->front[k].latency_us);
    fprintf(fp, "EOD\n$uniform << EOD\n");
    int *label = calloc(run->n_uniform ? run->n_uniform : 1, sizeof *label);
    if (label)
        uniform_labels(run, label);
    for (size_t k = 0; k < run->n_uniform; k++)
        fprintf(fp, "%.17g %.17g %s %d\n", bits_per_weight(run, run->uniform[k].bytes), run->uniform[k].error,
                run->uniform[k].format, label ? label[k] : 0);
    free(label);
    fprintf(fp, "EOD\n");
    if (run->hw)
        fprintf(fp, "plot $front using 1:2:3 with points pt 7 ps 0.8 palette title 'front (%s)', \\\n",
                run->search_name);
    else
        fprintf(fp, "plot $front using 1:2 with linespoints pt 7 ps 0.6 lc rgb '#1f4e9e' title 'front (%s)', \\\n",
                run->search_name);
    fprintf(fp, "  $uniform using 1:2 with points pt 5 ps 0.9 lc rgb '#c0392b' title 'uniform formats', \\\n"
                "  $uniform using 1:($4 > 0 ? $2 : NaN):3 with labels left offset 0.6,0.4 font ',8' "
                "noenhanced notitle\n");
}

/* Runs gnuplot with the script on its stdin. Its messages go to a
 * temporary file quoted on failure. An exec failure travels back over a
 * close-on-exec pipe, so "not installed" is told apart from "failed". */
static int run_gnuplot(const pareto_run *run, bp_error *err)
{
    int in[2], status_pipe[2];
    FILE *log = tmpfile();
    if (!log)
        return bp_error_set(err, BP_EIO, "cannot create a temporary file: %s", strerror(errno));
    if (pipe(in) != 0) {
        fclose(log);
        return bp_error_set(err, BP_EIO, "pipe: %s", strerror(errno));
    }
    if (pipe2(status_pipe, O_CLOEXEC) != 0) {
        close(in[0]);
        close(in[1]);
        fclose(log);
        return bp_error_set(err, BP_EIO, "pipe: %s", strerror(errno));
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(in[0]);
        close(in[1]);
        close(status_pipe[0]);
        close(status_pipe[1]);
        fclose(log);
        return bp_error_set(err, BP_EIO, "fork: %s", strerror(errno));
    }
    if (pid == 0) {
        dup2(in[0], STDIN_FILENO);
        dup2(fileno(log), STDOUT_FILENO);
        dup2(fileno(log), STDERR_FILENO);
        close(in[0]);
        close(in[1]);
        close(status_pipe[0]);
        execlp("gnuplot", "gnuplot", (char *)NULL);
        int e = errno;
        ssize_t wr = write(status_pipe[1], &e, sizeof e);
        (void)wr;
        _exit(127);
    }
    close(in[0]);
    close(status_pipe[1]);
    struct sigaction ign, old;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &ign, &old); /* gnuplot dying must not kill us */
    FILE *fp = fdopen(in[1], "w");
    if (fp) {
        write_gnuplot_script(run, fp);
        fclose(fp);
    } else {
        close(in[1]);
    }
    int exec_errno = 0;
    ssize_t got = read(status_pipe[0], &exec_errno, sizeof exec_errno);
    close(status_pipe[0]);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    sigaction(SIGPIPE, &old, NULL);
    int rc = BP_OK;
    if (got == (ssize_t)sizeof exec_errno) {
        rc = exec_errno == ENOENT
                 ? bp_error_set(err, BP_ENOTFOUND, "gnuplot is not installed (not found in PATH); "
                                                   "install gnuplot-nox or leave out --png")
                 : bp_error_set(err, BP_EIO, "cannot run gnuplot: %s", strerror(exec_errno));
    } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char tail[400] = "";
        long size = ftell(log);
        fseek(log, size > (long)sizeof tail - 1 ? size - (long)(sizeof tail - 1) : 0, SEEK_SET);
        size_t n = fread(tail, 1, sizeof tail - 1, log);
        tail[n] = '\0';
        for (char *c = tail; *c; c++)
            if (*c == '\n')
                *c = ' ';
        rc = bp_error_set(err, BP_EIO, "%s: gnuplot failed: %s", run->a->png_path, tail);
    }
    fclose(log);
    return rc;
}

static int check_png(const char *path, bp_error *err)
{
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    unsigned char head[8];
    FILE *fp = fopen(path, "rb");
    size_t n = fp ? fread(head, 1, sizeof head, fp) : 0;
    if (fp)
        fclose(fp);
    if (n != sizeof head || memcmp(head, sig, sizeof sig))
        return bp_error_set(err, BP_EIO, "%s: gnuplot did not write a PNG file", path);
    return BP_OK;
}

/* ---- command ---- */

static void run_free(pareto_run *run)
{
    points_free(run->front, run->n_front);
    free(run->uniform);
    bp_problem_destroy(&run->prob);
    bp_problem_destroy(&run->bytes_prob);
    bp_hw_profile_destroy(&run->hw);
    bp_table_destroy(&run->table);
}

static int prepare(pareto_run *run, bp_error *err)
{
    const pareto_args *a = run->a;
    int rc = bp_table_read(a->table_path, &run->table, err);
    if (!rc && a->formats && (rc = filter_formats(&run->table, a->formats, err)))
        bp_error_prefix(err, "%s", a->table_path);
    if (!rc)
        rc = choose_metric(run, err);
    if (!rc && (rc = bp_job_build_problem(run->table, NULL, (bp_metric)run->metric, run->method,
                                          &run->bytes_prob, err)))
        bp_error_prefix(err, "%s", a->table_path);
    if (!rc)
        rc = count_params(run, err);
    if (!rc && a->profile)
        rc = bp_hw_profile_open(a->profile, &run->hw, err);
    if (!rc)
        rc = build_search_problem(run, err);
    return rc;
}

int bp_cmd_pareto(int argc, char **argv)
{
    pareto_args a;
    int ex = parse_args(argc, argv, &a);
    if (ex >= 0)
        return ex;
    pareto_run run;
    memset(&run, 0, sizeof run);
    run.a = &a;
    bp_error err;
    bp_error_clear(&err);
    int rc = prepare(&run, &err);
    if (!rc && !a.quiet)
        fprintf(stderr, "bitplan pareto: %zu tensors, metric %s (%s weights), %s search\n",
                run.prob->n_items, bp_table_metric_name((bp_metric)run.metric),
                bp_table_method_name(run.method), a.search == SEARCH_EXACT ? "exact" : "nsga2");
    if (!rc)
        rc = compute_front(&run, &err);
    if (!rc)
        rc = uniform_points(&run, &err);
    char *text = rc ? NULL : front_json_text(&run, &err);
    if (text) {
        rc = write_file_atomic(a.out_path, text, &err);
        free(text);
    } else if (!rc) {
        rc = BP_ENOMEM;
    }
    if (rc) {
        run_free(&run);
        return bp_cli_fail(CMD, &err);
    }
    printf("front: %zu points, %.4f to %.4f bits/weight; %zu uniform formats; written to %s\n", run.n_front,
           run.n_front ? bits_per_weight(&run, run.front[0].bytes) : 0.0,
           run.n_front ? bits_per_weight(&run, run.front[run.n_front - 1].bytes) : 0.0, run.n_uniform,
           a.out_path);
    if (a.png_path) {
        rc = run_gnuplot(&run, &err);
        if (!rc)
            rc = check_png(a.png_path, &err);
        if (rc) {
            bp_error_prefix(&err, "PNG not written (the JSON %s is complete)", a.out_path);
            run_free(&run);
            return bp_cli_fail(CMD, &err);
        }
        printf("plot written to %s\n", a.png_path);
    }
    run_free(&run);
    return BP_EXIT_OK;
}
