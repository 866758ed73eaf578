// Decision log and audit trail: filters, links to events, export, chain verification.

import { h, message, fmtTime, saveBlob } from '../dom.js';
import * as api from '../api.js';
import { explain } from '../rules.js';

/** datetime-local (taken as UTC) to RFC 3339. */
function toRfc3339(v) {
  return v ? `${v.length === 16 ? `${v}:00` : v}Z` : '';
}

function eventLink(row) {
  return row.rollout_id
    ? h('a', { href: `#/rollouts/${row.rollout_id}/events/${row.position}` }, String(row.position))
    : String(row.position);
}

export async function auditPage(params) {
  const val = (k) => params.get(k) || '';
  const team = h('input', { id: 'a-team', value: val('team'), autocomplete: 'off' });
  const actor = h('input', { id: 'a-actor', value: val('actor'), autocomplete: 'off' });
  const type = h('input', { id: 'a-type', value: val('event_type'), autocomplete: 'off', placeholder: 'e.g. AdvanceApproved' });
  const from = h('input', { id: 'a-from', type: 'datetime-local', value: val('from').replace(/:00Z$|Z$/, '') });
  const to = h('input', { id: 'a-to', type: 'datetime-local', value: val('to').replace(/:00Z$|Z$/, '') });
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter the records' },
    h('div', {}, h('label', { for: 'a-team' }, 'Team'), team),
    h('div', {}, h('label', { for: 'a-actor' }, 'Actor'), actor),
    h('div', {}, h('label', { for: 'a-type' }, 'Event type (audit trail)'), type),
    h('div', {}, h('label', { for: 'a-from' }, 'From (UTC)'), from),
    h('div', {}, h('label', { for: 'a-to' }, 'To (UTC)'), to),
    h('div', {}, h('button', { type: 'submit', id: 'a-apply' }, 'Apply filters')));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    if (team.value.trim()) q.set('team', team.value.trim());
    if (actor.value.trim()) q.set('actor', actor.value.trim());
    if (type.value.trim()) q.set('event_type', type.value.trim());
    if (from.value) q.set('from', toRfc3339(from.value));
    if (to.value) q.set('to', toRfc3339(to.value));
    if (params.get('rollout_id')) q.set('rollout_id', params.get('rollout_id'));
    const next = `#/audit?${q}`;
    if (location.hash === next) window.dispatchEvent(new CustomEvent('rollgate:navigate'));
    else location.hash = next;
  });

  const common = {};
  for (const k of ['team', 'actor', 'from', 'to', 'rollout_id']) if (params.get(k)) common[k] = params.get(k);
  const decisionFilters = { ...common };
  const auditFilters = { ...common };
  if (params.get('event_type')) auditFilters.event_type = params.get('event_type');

  const [decisions, audit] = await Promise.all([
    api.get('/v1/decisions', { ...decisionFilters, limit: 200 }),
    api.get('/v1/audit', { ...auditFilters, limit: 200 }),
  ]);

  const decisionTable = h('div', { class: 'table-wrap' }, h('table', { id: 'decisions-table' },
    h('caption', { class: 'hint' }, 'Decision log: who decided what, under which policy version'),
    h('thead', {}, h('tr', {}, ['Position', 'Decided', 'Kind', 'Actor', 'Policy', 'Summary'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, decisions.items.length ? decisions.items.map((d) => h('tr', {},
      h('td', {}, eventLink(d)), h('td', {}, fmtTime(d.decided_at)), h('td', {}, d.kind.replace(/_/g, ' ')),
      h('td', { class: 'actor' }, d.actor.id || 'system'), h('td', {}, d.policy_version === null ? '—' : `v${d.policy_version}`),
      h('td', {}, d.summary, d.rationale ? h('div', { class: 'hint' }, d.rationale) : null))) : h('tr', {}, h('td', { colspan: 6 }, 'No decision matches.')))));

  const auditTable = h('div', { class: 'table-wrap' }, h('table', { id: 'audit-table' },
    h('caption', { class: 'hint' }, 'Audit trail: one row per event'),
    h('thead', {}, h('tr', {}, ['Position', 'Recorded', 'Type', 'Actor', 'Team', 'Summary'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, audit.items.length ? audit.items.map((e) => h('tr', { 'data-type': e.event_type },
      h('td', {}, eventLink(e)), h('td', {}, fmtTime(e.recorded_at)), h('td', { class: 'event-type' }, e.event_type),
      h('td', { class: 'actor' }, e.actor.id || 'system'), h('td', {}, e.team || '—'), h('td', {}, e.summary))) : h('tr', {}, h('td', { colspan: 6 }, 'No event matches.')))));

  const out = h('div', { id: 'audit-result', 'aria-live': 'polite' });
  const verify = h('button', { type: 'button', id: 'verify-chain' }, 'Verify chain');
  verify.addEventListener('click', async () => {
    verify.disabled = true;
    out.replaceChildren(message('info', 'Verifying the whole log…'));
    try {
      const r = await api.get('/v1/audit/verify');
      out.replaceChildren(r.ok
        ? message('ok', `Chain verified through position ${r.verified_through}; head hash ${r.head_hash}.`)
        : message('error', `Chain broken: the first bad position is ${r.first_bad_position} (${r.reason}).`));
    } catch (e) {
      out.replaceChildren(message('error', explain(e)));
    } finally {
      verify.disabled = false;
    }
  });
  const exporter = (format) => {
    const b = h('button', { type: 'button', class: 'secondary', id: `export-${format}` }, `Export ${format.toUpperCase()}`);
    b.addEventListener('click', async () => {
      b.disabled = true;
      try {
        const data = await api.blob(`/v1/audit/export?format=${format}`, format === 'csv' ? 'text/csv' : 'application/x-ndjson');
        saveBlob(data, `rollgate-audit.${format}`);
        out.replaceChildren(message('ok', `Exported ${data.size} bytes as ${format.toUpperCase()}.`));
      } catch (e) {
        out.replaceChildren(message('error', explain(e)));
      } finally {
        b.disabled = false;
      }
    });
    return b;
  };

  const node = h('section', { 'aria-labelledby': 'audit-title' },
    h('h1', { id: 'audit-title' }, 'Decisions and audit trail'),
    params.get('rollout_id') ? h('p', { class: 'hint' }, 'Only the rollout ', h('a', { href: `#/rollouts/${params.get('rollout_id')}` }, params.get('rollout_id')), '.') : null,
    form,
    h('div', { class: 'row' }, verify, exporter('ndjson'), exporter('csv')),
    out,
    h('h2', {}, 'Decision log'), decisionTable,
    h('h2', {}, 'Audit trail'), auditTable);
  return { node, title: 'Decisions and audit' };
}
