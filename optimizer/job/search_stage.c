/* The real-loss search stage of a plan job, independent of how candidates
 * are evaluated (the plan driver turns each asked candidate into an
 * "evaluate" task for a worker).
 *
 * Order of batches:
 *   1. baselines, at high fidelity: the ILP plan and every uniform plan
 *      that fits the constraints;
 *   2. the (1+lambda) search of evo.h, seeded with the ILP plan.
 * A candidate already measured at a fidelity is answered from a memo
 * instead of being asked again (the search's seed is the ILP baseline), so
 * no evaluation is wasted.
 *
 * The result is the best measured of {search result, ILP plan, uniform
 * plans} at high fidelity, which is what makes the no-regression guarantee
 * hold by construction: the returned plan's measured loss is never above
 * any baseline's. Ties keep the earlier of search, ILP, uniform (in that
 * order), so the result is deterministic. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bitplan/evo.h"
#include "search_stage.h"

typedef struct memo_entry {
    uint64_t key;       /* hash of (fidelity, choice vector) */
    int32_t *choice;    /* to rule out hash collisions */
    int fidelity;
    double fitness;
} memo_entry;

struct bp__search {
    const bp_problem *prob;
    size_t n_items;
    int32_t *ilp;                 /* n_items */
    size_t n_uniform;
    int32_t *uniform;             /* n_uniform * n_items */
    char **uniform_name;
    double ilp_fit;
    double *uniform_fit;
    bp_evo *evo;
    int phase;                    /* 0 baselines, 1 search, 2 done */
    /* the batch asked and not yet told */
    int pending;
    int pending_fidelity;
    size_t pending_n;             /* candidates the caller must evaluate */
    int32_t *pending_choice;      /* pending_n * n_items */
    size_t *pending_slot;         /* per caller candidate: index in the full batch */
    size_t full_n;                /* candidates of the evo batch */
    double *full_fit;             /* full_n, memo answers prefilled */
    int *full_known;
    memo_entry *memo;
    size_t n_memo, cap_memo;
    size_t evals_sent;            /* evaluations actually asked of the caller */
    size_t memo_hits;
};

static uint64_t choice_key(const int32_t *c, size_t n, int fidelity)
{
    /* FNV-1a over the bytes: a memo key, not a security boundary; the
     * stored vector settles collisions. */
    uint64_t h = 1469598103934665603ull ^ (uint64_t)fidelity;
    const unsigned char *p = (const unsigned char *)c;
    for (size_t i = 0; i < n * sizeof *c; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

static int memo_find(const bp__search *s, const int32_t *c, int fidelity, double *fit)
{
    uint64_t k = choice_key(c, s->n_items, fidelity);
    for (size_t i = 0; i < s->n_memo; i++) {
        const memo_entry *m = &s->memo[i];
        if (m->key == k && m->fidelity == fidelity && !memcmp(m->choice, c, s->n_items * sizeof *c)) {
            *fit = m->fitness;
            return 1;
        }
    }
    return 0;
}

static int memo_add(bp__search *s, const int32_t *c, int fidelity, double fit, bp_error *err)
{
    if (s->n_memo == s->cap_memo) {
        size_t cap = s->cap_memo ? 2 * s->cap_memo : 64;
        memo_entry *m = realloc(s->memo, cap * sizeof *m);
        if (!m)
            return bp_error_set(err, BP_ENOMEM, "search: out of memory");
        s->memo = m;
        s->cap_memo = cap;
    }
    memo_entry *m = &s->memo[s->n_memo];
    m->choice = malloc(s->n_items * sizeof *c);
    if (!m->choice)
        return bp_error_set(err, BP_ENOMEM, "search: out of memory");
    memcpy(m->choice, c, s->n_items * sizeof *c);
    m->key = choice_key(c, s->n_items, fidelity);
    m->fidelity = fidelity;
    m->fitness = fit;
    s->n_memo++;
    return BP_OK;
}

void bp__search_destroy(bp__search **sp)
{
    if (!sp || !*sp)
        return;
    bp__search *s = *sp;
    bp_evo_destroy(&s->evo);
    free(s->ilp);
    free(s->uniform);
    for (size_t i = 0; i < s->n_uniform; i++)
        free(s->uniform_name[i]);
    free(s->uniform_name);
    free(s->uniform_fit);
    free(s->pending_choice);
    free(s->pending_slot);
    free(s->full_fit);
    free(s->full_known);
    for (size_t i = 0; i < s->n_memo; i++)
        free(s->memo[i].choice);
    free(s->memo);
    free(s);
    *sp = NULL;
}

int bp__search_new(const bp_problem *prob, const int32_t *ilp_choice, const int32_t *uniform_choice,
                   const char *const *uniform_names, size_t n_uniform, const bp_evo_options *eo,
                   bp__search **out, bp_error *err)
{
    *out = NULL;
    bp__search *s = calloc(1, sizeof *s);
    if (!s)
        return bp_error_set(err, BP_ENOMEM, "search: out of memory");
    s->prob = prob;
    s->n_items = prob->n_items;
    s->n_uniform = n_uniform;
    s->ilp = malloc(s->n_items * sizeof *s->ilp);
    s->uniform = n_uniform ? malloc(n_uniform * s->n_items * sizeof *s->uniform) : NULL;
    s->uniform_name = n_uniform ? calloc(n_uniform, sizeof *s->uniform_name) : NULL;
    s->uniform_fit = malloc((n_uniform + 1) * sizeof *s->uniform_fit);
    if (!s->ilp || (n_uniform && (!s->uniform || !s->uniform_name)) || !s->uniform_fit) {
        bp__search_destroy(&s);
        return bp_error_set(err, BP_ENOMEM, "search: out of memory");
    }
    memcpy(s->ilp, ilp_choice, s->n_items * sizeof *s->ilp);
    if (n_uniform)
        memcpy(s->uniform, uniform_choice, n_uniform * s->n_items * sizeof *s->uniform);
    for (size_t i = 0; i < n_uniform; i++) {
        s->uniform_name[i] = strdup(uniform_names[i]);
        if (!s->uniform_name[i]) {
            bp__search_destroy(&s);
            return bp_error_set(err, BP_ENOMEM, "search: out of memory");
        }
        s->uniform_fit[i] = NAN;
    }
    s->ilp_fit = NAN;
    int rc = bp_evo_new(prob, ilp_choice, eo, &s->evo, err);
    if (rc != BP_OK) {
        bp__search_destroy(&s);
        return rc;
    }
    *out = s;
    return BP_OK;
}

/* Keep the candidates of a full batch that the memo cannot answer. */
static int stage_batch(bp__search *s, const int32_t *choice, size_t n, int fidelity, bp_error *err)
{
    free(s->pending_choice);
    free(s->pending_slot);
    free(s->full_fit);
    free(s->full_known);
    size_t ni = s->n_items;
    s->pending_choice = malloc((n ? n : 1) * ni * sizeof *s->pending_choice);
    s->pending_slot = malloc((n ? n : 1) * sizeof *s->pending_slot);
    s->full_fit = malloc((n ? n : 1) * sizeof *s->full_fit);
    s->full_known = calloc(n ? n : 1, sizeof *s->full_known);
    if (!s->pending_choice || !s->pending_slot || !s->full_fit || !s->full_known)
        return bp_error_set(err, BP_ENOMEM, "search: out of memory");
    s->pending_n = 0;
    s->full_n = n;
    for (size_t k = 0; k < n; k++) {
        const int32_t *c = choice + k * ni;
        double f;
        if (memo_find(s, c, fidelity, &f)) {
            s->full_fit[k] = f;
            s->full_known[k] = 1;
            s->memo_hits++;
            continue;
        }
        /* The same vector twice in one batch is evaluated once. */
        size_t dup = SIZE_MAX;
        for (size_t j = 0; j < s->pending_n; j++)
            if (!memcmp(s->pending_choice + j * ni, c, ni * sizeof *c)) {
                dup = j;
                break;
            }
        if (dup != SIZE_MAX) {
            s->full_known[k] = 2 + (int)dup; /* resolved at tell */
            continue;
        }
        memcpy(s->pending_choice + s->pending_n * ni, c, ni * sizeof *c);
        s->pending_slot[s->pending_n++] = k;
    }
    s->pending_fidelity = fidelity;
    s->pending = 1;
    return BP_OK;
}

static int finish_batch(bp__search *s, const double *fit, bp_error *err);

int bp__search_ask(bp__search *s, const int32_t **choice, size_t *n, int *fidelity, bp_error *err)
{
    for (;;) {
        if (s->pending && s->pending_n > 0) {
            *choice = s->pending_choice;
            *n = s->pending_n;
            *fidelity = s->pending_fidelity;
            return BP_OK;
        }
        if (s->pending) {
            /* Everything came from the memo: tell it and move on. */
            int rc = finish_batch(s, NULL, err);
            if (rc != BP_OK)
                return rc;
            continue;
        }
        if (s->phase == 0) {
            size_t nb = 1 + s->n_uniform, ni = s->n_items;
            int32_t *all = malloc(nb * ni * sizeof *all);
            if (!all)
                return bp_error_set(err, BP_ENOMEM, "search: out of memory");
            memcpy(all, s->ilp, ni * sizeof *all);
            if (s->n_uniform)
                memcpy(all + ni, s->uniform, s->n_uniform * ni * sizeof *all);
            int rc = stage_batch(s, all, nb, BP_EVO_HIGH, err);
            free(all);
            if (rc != BP_OK)
                return rc;
            continue;
        }
        if (s->phase == 1) {
            bp_evo_batch b;
            int rc = bp_evo_ask(s->evo, &b, err);
            if (rc != BP_OK)
                return rc;
            if (b.n == 0) {
                s->phase = 2;
                continue;
            }
            if ((rc = stage_batch(s, b.choice, b.n, b.fidelity, err)) != BP_OK)
                return rc;
            continue;
        }
        *choice = NULL;
        *n = 0;
        *fidelity = BP_EVO_HIGH;
        return BP_OK;
    }
}

static int finish_batch(bp__search *s, const double *fit, bp_error *err)
{
    size_t ni = s->n_items;
    for (size_t j = 0; j < s->pending_n; j++) {
        size_t k = s->pending_slot[j];
        s->full_fit[k] = fit[j];
        s->full_known[k] = 1;
        int rc = memo_add(s, s->pending_choice + j * ni, s->pending_fidelity, fit[j], err);
        if (rc != BP_OK)
            return rc;
    }
    for (size_t k = 0; k < s->full_n; k++)
        if (s->full_known[k] >= 2)
            s->full_fit[k] = fit[s->full_known[k] - 2];
    s->evals_sent += s->pending_n;
    s->pending = 0;
    s->pending_n = 0;
    if (s->phase == 0) {
        s->ilp_fit = s->full_fit[0];
        for (size_t u = 0; u < s->n_uniform; u++)
            s->uniform_fit[u] = s->full_fit[1 + u];
        s->phase = 1;
        return BP_OK;
    }
    return bp_evo_tell(s->evo, s->full_fit, s->full_n, err);
}

int bp__search_tell(bp__search *s, const double *fitness, size_t n, bp_error *err)
{
    if (!s->pending || s->pending_n == 0)
        return bp_error_set(err, BP_EINVAL, "search: no evaluation is pending");
    if (n != s->pending_n)
        return bp_error_set(err, BP_EINVAL, "search: %zu results for %zu candidates", n, s->pending_n);
    for (size_t i = 0; i < n; i++)
        if (!isfinite(fitness[i]))
            return bp_error_set(err, BP_EINVAL, "search: candidate %zu has a non-finite loss", i);
    return finish_batch(s, fitness, err);
}

int bp__search_done(const bp__search *s)
{
    return s->phase == 2;
}

int bp__search_result(const bp__search *s, bp__search_outcome *o)
{
    memset(o, 0, sizeof *o);
    const int32_t *best = NULL;
    double bf = NAN;
    bp_evo_best(s->evo, &best, &bf);
    o->choice = s->ilp;
    o->which = "ilp";
    o->uniform_index = -1;
    o->fitness = s->ilp_fit;
    if (best && isfinite(bf) && bf < s->ilp_fit) {
        o->choice = best;
        o->which = "evo";
        o->fitness = bf;
    }
    for (size_t u = 0; u < s->n_uniform; u++)
        if (s->uniform_fit[u] < o->fitness) {
            o->choice = s->uniform + u * s->n_items;
            o->which = "uniform";
            o->uniform_index = (long)u;
            o->fitness = s->uniform_fit[u];
        }
    o->ilp_fitness = s->ilp_fit;
    o->best_uniform = -1;
    o->best_uniform_fitness = NAN;
    for (size_t u = 0; u < s->n_uniform; u++)
        if (o->best_uniform < 0 || s->uniform_fit[u] < o->best_uniform_fitness) {
            o->best_uniform = (long)u;
            o->best_uniform_fitness = s->uniform_fit[u];
        }
    o->evo_fitness = bf;
    bp_evo_get_stats(s->evo, &o->stats);
    o->evals_sent = s->evals_sent;
    o->memo_hits = s->memo_hits;
    return BP_OK;
}

size_t bp__search_uniform_count(const bp__search *s)
{
    return s->n_uniform;
}

const char *bp__search_uniform_name(const bp__search *s, size_t u, double *fitness)
{
    if (u >= s->n_uniform)
        return NULL;
    if (fitness)
        *fitness = s->uniform_fit[u];
    return s->uniform_name[u];
}

size_t bp__search_history(const bp__search *s, const double **best)
{
    return bp_evo_history(s->evo, best);
}
