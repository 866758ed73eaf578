// Rollouts: the list, filtered by team, status and feature.

import { h, badge, fmtTime } from '../dom.js';
import * as api from '../api.js';

const STATUSES = ['', 'draft', 'ready', 'running', 'paused', 'rolled_back', 'completed', 'aborted'];

export async function rolloutsPage(params) {
  const team = h('input', { id: 'f-team', name: 'team', value: params.get('team') || '', autocomplete: 'off' });
  const status = h('select', { id: 'f-status', name: 'status' },
    STATUSES.map((s) => h('option', { value: s, selected: (params.get('status') || '') === s }, s ? s.replace('_', ' ') : 'any')));
  const feature = h('input', { id: 'f-feature', name: 'feature_key', value: params.get('feature_key') || '', autocomplete: 'off' });
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter rollouts' },
    h('div', {}, h('label', { for: 'f-team' }, 'Team'), team),
    h('div', {}, h('label', { for: 'f-status' }, 'Status'), status),
    h('div', {}, h('label', { for: 'f-feature' }, 'Feature key'), feature),
    h('div', {}, h('button', { type: 'submit' }, 'Apply filters')));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    if (team.value.trim()) q.set('team', team.value.trim());
    if (status.value) q.set('status', status.value);
    if (feature.value.trim()) q.set('feature_key', feature.value.trim());
    location.hash = `#/rollouts?${q}`;
  });

  const tbody = h('tbody');
  const table = h('div', { class: 'table-wrap' }, h('table', { id: 'rollouts-table' },
    h('caption', { class: 'hint' }, 'Rollouts of your teams, oldest first'),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Title'), h('th', { scope: 'col' }, 'Team'),
      h('th', { scope: 'col', class: 'hide-narrow' }, 'Feature'), h('th', { scope: 'col' }, 'Status'),
      h('th', { scope: 'col' }, 'Stage'), h('th', { scope: 'col' }, 'Exposure'),
      h('th', { scope: 'col', class: 'hide-narrow' }, 'Updated'))),
    tbody));

  async function load() {
    const filters = {};
    for (const k of ['team', 'status', 'feature_key']) if (params.get(k)) filters[k] = params.get(k);
    const items = await api.all('/v1/rollouts', filters, 5);
    tbody.replaceChildren(...items.map((r) => h('tr', { 'data-id': r.id },
      h('td', {}, h('a', { href: `#/rollouts/${r.id}`, class: 'rollout-title' }, r.title)),
      h('td', {}, r.team),
      h('td', { class: 'hide-narrow' }, r.feature_key),
      h('td', {}, badge(r.status)),
      h('td', {}, r.stage_index === null ? 'not started' : `${r.stage_index + 1} of ${r.stage_count} · ${r.stage_name || ''}`),
      h('td', {}, `${r.exposure} %`),
      h('td', { class: 'hide-narrow' }, fmtTime(r.updated_at)))));
    if (!items.length) tbody.append(h('tr', {}, h('td', { colspan: 7 }, 'No rollout matches.')));
  }
  await load();
  let timer = null;
  return {
    node: h('section', { 'aria-labelledby': 'rollouts-title' }, h('h1', { id: 'rollouts-title' }, 'Rollouts'), form, table),
    title: 'Rollouts',
    onEvent(ev) {
      if (!ev.stream.startsWith('rollout-')) return;
      clearTimeout(timer);
      timer = setTimeout(() => load().catch(() => {}), 500);
    },
  };
}
