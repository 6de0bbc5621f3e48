/* The plan job's real-loss search, between the ILP solve and the plan:
 * turns the search stage's candidates (search_stage.c) into plans and
 * "evaluate" task params, and the measured KL back into the stage, then
 * writes the returned plan with the whole story in its "search" section:
 * the ILP plan's, the best uniform plan's and the returned plan's measured
 * loss, the search's counters and history. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/evo.h"
#include "driver_search.h"
#include "search_stage.h"
#include "tasks_internal.h"

struct bp__search_driver {
    bp__search_env env;
    bp_solution ilp;            /* the ILP solution (choices copied) */
    bp__search *stage;
    const int32_t *batch;       /* the batch asked, owned by the stage */
    size_t batch_n;
    int batch_fidelity;
    size_t n_uniform;
    char **uniform_name;
    double seconds_unused;
};

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

void bp__search_driver_destroy(bp__search_driver **sp)
{
    if (!sp || !*sp)
        return;
    bp__search_driver *s = *sp;
    bp__search_destroy(&s->stage);
    bp_solution_free(&s->ilp);
    free_names(s->uniform_name, s->n_uniform);
    free(s);
    *sp = NULL;
}

static int fits(const bp_problem *p, const int32_t *c)
{
    for (size_t j = 0; j < p->n_constraints; j++) {
        double t = 0.0;
        for (size_t i = 0; i < p->n_items; i++)
            t += p->cost[(p->item_start[i] + (size_t)c[i]) * p->n_constraints + j];
        if (t > p->capacity[j])
            return 0;
    }
    return 1;
}

/* Every format that every weight item offers, as a candidate vector (KV
 * items, if any, at their least-error choice), kept when it fits. The
 * formats are tried in the order of the first item's choices, so the
 * candidates are deterministic. */
static int uniform_candidates(const bp__search_env *env, int32_t **out, char ***names, size_t *n_out,
                              bp_error *err)
{
    const bp_problem *p = env->jp->prob;
    size_t ni = p->n_items, nw = env->jp->n_weight_items;
    *out = NULL;
    *names = NULL;
    *n_out = 0;
    if (nw == 0)
        return BP_OK;
    size_t first_n = p->item_start[1] - p->item_start[0];
    int32_t *all = malloc(first_n * ni * sizeof *all);
    char **nm = calloc(first_n ? first_n : 1, sizeof *nm);
    int32_t *c = malloc(ni * sizeof *c);
    if (!all || !nm || !c) {
        free(all);
        free(nm);
        free(c);
        return bp_error_set(err, BP_ENOMEM, "search: out of memory");
    }
    size_t n = 0;
    for (size_t k0 = 0; k0 < first_n; k0++) {
        bp_table_row r0;
        bp_table_get_row(env->table, (size_t)p->label[p->item_start[0] + k0], &r0);
        int ok = 1;
        for (size_t i = 0; i < ni && ok; i++) {
            size_t a = p->item_start[i], b = p->item_start[i + 1];
            c[i] = -1;
            if (i >= nw) {
                /* KV layer: its most accurate choice. */
                size_t best = a;
                for (size_t k = a; k < b; k++)
                    if (p->error[k] < p->error[best])
                        best = k;
                c[i] = (int32_t)(best - a);
                continue;
            }
            for (size_t k = a; k < b; k++) {
                bp_table_row r;
                bp_table_get_row(env->table, (size_t)p->label[k], &r);
                if (!strcmp(r.format, r0.format)) {
                    c[i] = (int32_t)(k - a);
                    break;
                }
            }
            ok = c[i] >= 0;
        }
        if (!ok || !fits(p, c))
            continue;
        memcpy(all + n * ni, c, ni * sizeof *c);
        if (!(nm[n] = strdup(r0.format))) {
            free(all);
            free_names(nm, n);
            free(c);
            return bp_error_set(err, BP_ENOMEM, "search: out of memory");
        }
        n++;
    }
    free(c);
    *out = all;
    *names = nm;
    *n_out = n;
    return BP_OK;
}

int bp__search_driver_new(const bp__search_env *env, const bp_solution *ilp, bp__search_driver **out,
                          bp_error *err)
{
    *out = NULL;
    const bp_problem *p = env->jp->prob;
    if (env->n_low < 1 || env->n_high < env->n_low)
        return bp_error_set(err, BP_EINVAL, "search: bad window counts (low %lld, high %lld)",
                            (long long)env->n_low, (long long)env->n_high);
    bp__search_driver *s = calloc(1, sizeof *s);
    if (!s)
        return bp_error_set(err, BP_ENOMEM, "search: out of memory");
    s->env = *env;
    int rc = bp_solution_init(&s->ilp, p->n_items, err);
    if (rc != BP_OK) {
        free(s);
        return rc;
    }
    memcpy(s->ilp.choice, ilp->choice, p->n_items * sizeof *ilp->choice);
    s->ilp.status = ilp->status;
    s->ilp.objective = ilp->objective;
    s->ilp.bound = ilp->bound;
    s->ilp.gap = ilp->gap;
    memcpy(s->ilp.cost_total, ilp->cost_total, sizeof ilp->cost_total);
    snprintf(s->ilp.solver, sizeof s->ilp.solver, "%s", ilp->solver);
    s->ilp.nodes = ilp->nodes;
    s->ilp.time_limited = ilp->time_limited;
    int32_t *uni = NULL;
    if ((rc = uniform_candidates(env, &uni, &s->uniform_name, &s->n_uniform, err)) != BP_OK) {
        bp__search_driver_destroy(&s);
        return rc;
    }
    rc = bp__search_new(p, ilp->choice, uni, (const char *const *)s->uniform_name, s->n_uniform, &env->evo, &s->stage,
                        err);
    free(uni);
    if (rc != BP_OK) {
        bp__search_driver_destroy(&s);
        return rc;
    }
    *out = s;
    return BP_OK;
}

int bp__search_driver_batch(bp__search_driver *s, size_t *n, bp_error *err)
{
    int rc = bp__search_ask(s->stage, &s->batch, &s->batch_n, &s->batch_fidelity, err);
    if (rc != BP_OK)
        return rc;
    *n = s->batch_n;
    return BP_OK;
}

int64_t bp__search_driver_windows(const bp__search_driver *s)
{
    return s->batch_fidelity == BP_EVO_LOW ? s->env.n_low : s->env.n_high;
}

/* A plan for a choice vector; the solver section says what found it. */
static int plan_for(const bp__search_driver *s, const int32_t *choice, const char *solver, const char *search_json,
                    bp_plan **out, bp_error *err)
{
    const bp__search_env *e = &s->env;
    bp_solution sol;
    memset(&sol, 0, sizeof sol);
    int rc = bp_solution_init(&sol, e->jp->prob->n_items, err);
    if (rc != BP_OK)
        return rc;
    memcpy(sol.choice, choice, e->jp->prob->n_items * sizeof *choice);
    if ((rc = bp_solution_evaluate(e->jp->prob, &sol, err)) != BP_OK)
        goto out;
    /* The ILP's bound is still a lower bound on the proxy objective. */
    sol.status = BP_SOLVE_FEASIBLE;
    if (!memcmp(choice, s->ilp.choice, e->jp->prob->n_items * sizeof *choice))
        sol.status = s->ilp.status;
    sol.bound = s->ilp.bound;
    sol.gap = isfinite(sol.bound) ? (sol.objective - sol.bound) / fmax(fabs(sol.objective), 1e-300) : NAN;
    if (sol.gap < 0)
        sol.gap = 0;
    snprintf(sol.solver, sizeof sol.solver, "%s", solver);
    sol.nodes = s->ilp.nodes;
    sol.time_limited = s->ilp.time_limited;
    if ((rc = bp__job_make_plan(e->spec, e->table, e->sel, e->jp, &sol, e->model_hash, e->metric, out, err)) !=
        BP_OK)
        goto out;
    if (search_json && (rc = bp_plan_set_search_json(*out, search_json, err)) != BP_OK)
        bp_plan_destroy(out);
out:
    bp_solution_free(&sol);
    return rc;
}

int bp__search_driver_task(const bp__search_driver *s, size_t k, msgpack_sbuffer *params, char **plan_json,
                           bp_error *err)
{
    const bp__search_env *e = &s->env;
    *plan_json = NULL;
    if (k >= s->batch_n)
        return bp_error_set(err, BP_EINVAL, "search: candidate %zu of %zu", k, s->batch_n);
    bp_plan *plan = NULL;
    int rc = plan_for(s, s->batch + k * e->jp->prob->n_items, "candidate", NULL, &plan, err);
    if (rc != BP_OK)
        return rc;
    *plan_json = bp_plan_to_string(plan, err);
    bp_plan_destroy(&plan);
    if (!*plan_json)
        return err ? err->code : BP_ENOMEM;
    msgpack_packer pk;
    msgpack_packer_init(&pk, params, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 9);
    bp__pack_str(&pk, "model", e->spec->model_dir);
    bp__pack_str(&pk, "model_hash", e->model_hash && e->model_hash[0] ? e->model_hash : NULL);
    bp__pack_str(&pk, e->text_path ? "text" : "tokens", e->text_path ? e->text_path : e->tokens_path);
    bp__pack_str(&pk, "tokens_hash", e->tokens_hash && e->tokens_hash[0] ? e->tokens_hash : NULL);
    bp__pack_str(&pk, "stats", e->stats_path && e->stats_path[0] ? e->stats_path : NULL);
    bp__pack_str(&pk, "calib_id", e->calib_id && e->calib_id[0] ? e->calib_id : NULL);
    bp__pack_key(&pk, "ctx");
    msgpack_pack_int64(&pk, e->ctx);
    bp__pack_key(&pk, "first_window");
    msgpack_pack_int64(&pk, e->first_window);
    bp__pack_key(&pk, "n_windows");
    msgpack_pack_int64(&pk, bp__search_driver_windows(s));
    return BP_OK;
}

int bp__search_driver_tell(bp__search_driver *s, const double *kl, size_t n, bp_error *err)
{
    return bp__search_tell(s->stage, kl, n, err);
}

int bp__search_driver_done(const bp__search_driver *s)
{
    return bp__search_done(s->stage);
}

static json_t *num(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

/* The "real_loss" object of the search section. */
static json_t *real_loss_json(const bp__search_driver *s, const bp__search_outcome *o)
{
    const bp__search_env *e = &s->env;
    json_t *r = json_object();
    json_object_set_new(r, "objective", json_string("kl"));
    json_t *w = json_object();
    json_object_set_new(w, "ctx", json_integer(e->ctx));
    json_object_set_new(w, "first", json_integer(e->first_window));
    json_object_set_new(w, "low", json_integer(e->n_low));
    json_object_set_new(w, "high", json_integer(e->n_high));
    json_object_set_new(r, "windows", w);
    json_object_set_new(r, "returned", json_string(o->which));
    if (o->uniform_index >= 0)
        json_object_set_new(r, "returned_format",
                            json_string(bp__search_uniform_name(s->stage, (size_t)o->uniform_index, NULL)));
    json_object_set_new(r, "returned_kl", num(o->fitness));
    json_object_set_new(r, "ilp_kl", num(o->ilp_fitness));
    json_t *bu = json_null();
    if (o->best_uniform >= 0) {
        bu = json_object();
        json_object_set_new(bu, "format",
                            json_string(bp__search_uniform_name(s->stage, (size_t)o->best_uniform, NULL)));
        json_object_set_new(bu, "kl", num(o->best_uniform_fitness));
    }
    json_object_set_new(r, "best_uniform", bu);
    json_t *ua = json_array();
    for (size_t u = 0; u < bp__search_uniform_count(s->stage); u++) {
        double f;
        const char *name = bp__search_uniform_name(s->stage, u, &f);
        json_t *x = json_object();
        json_object_set_new(x, "format", json_string(name));
        json_object_set_new(x, "kl", num(f));
        json_array_append_new(ua, x);
    }
    json_object_set_new(r, "uniform", ua);
    json_t *evo = json_object();
    json_object_set_new(evo, "best_kl", num(o->evo_fitness));
    json_object_set_new(evo, "lambda", json_integer((json_int_t)e->evo.lambda));
    json_object_set_new(evo, "generations", json_integer((json_int_t)o->stats.generations));
    json_object_set_new(evo, "promote", json_integer((json_int_t)e->evo.promote));
    json_object_set_new(evo, "seed", json_integer((json_int_t)e->evo.seed));
    json_object_set_new(evo, "evals_low", json_integer((json_int_t)o->stats.evals_low));
    json_object_set_new(evo, "evals_high", json_integer((json_int_t)o->stats.evals_high));
    json_object_set_new(evo, "evaluations_run", json_integer((json_int_t)o->evals_sent));
    json_object_set_new(evo, "accepted", json_integer((json_int_t)o->stats.accepted));
    json_object_set_new(evo, "stalled", json_boolean(o->stats.stalled));
    const double *hist = NULL;
    size_t nh = bp__search_history(s->stage, &hist);
    json_t *h = json_array();
    for (size_t i = 0; i < nh; i++)
        json_array_append_new(h, num(hist[i]));
    json_object_set_new(evo, "history", h);
    double gain = isfinite(o->ilp_fitness) && o->ilp_fitness > 0 ? 1.0 - o->fitness / o->ilp_fitness : NAN;
    json_object_set_new(r, "improvement_vs_ilp", num(gain));
    json_object_set_new(r, "search", evo);
    return r;
}

int bp__search_driver_plan(const bp__search_driver *s, bp_plan **out, bp_error *err)
{
    *out = NULL;
    bp__search_outcome o;
    bp__search_result(s->stage, &o);
    const char *solver = !strcmp(o.which, "evo") ? "evo" : !strcmp(o.which, "uniform") ? "uniform" : s->ilp.solver;
    /* First the plan with the constraints section bp__job_make_plan
     * writes, then that section extended with the real-loss story. */
    bp_plan *plan = NULL;
    int rc = plan_for(s, o.choice, solver, NULL, &plan, err);
    if (rc != BP_OK)
        return rc;
    char *base = bp_plan_search_json(plan);
    json_error_t je;
    json_t *root = base ? json_loads(base, 0, &je) : json_object();
    free(base);
    if (!root) {
        bp_plan_destroy(&plan);
        return bp_error_set(err, BP_ENOMEM, "search: cannot extend the search section");
    }
    json_object_set_new(root, "real_loss", real_loss_json(s, &o));
    char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
    json_decref(root);
    if (!text) {
        bp_plan_destroy(&plan);
        return bp_error_set(err, BP_ENOMEM, "out of memory");
    }
    rc = bp_plan_set_search_json(plan, text, err);
    free(text);
    if (rc == BP_OK)
        rc = bp_plan_validate(plan, err);
    if (rc != BP_OK) {
        bp_plan_destroy(&plan);
        return rc;
    }
    *out = plan;
    return BP_OK;
}
