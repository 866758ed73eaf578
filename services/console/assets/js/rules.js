// The governance rules in words, so a refusal reads as a sentence and not a code.

const WORDS = {
  R1: 'only people holding a role named by the stage\'s quorum rules may approve or reject',
  R2: 'you cannot approve your own request',
  R3: 'you have already approved this request (approvals count distinct people)',
  R4: 'the advance preconditions are not met (approvals, soak time, success criteria, no breach, no freeze)',
  R5: 'this request is closed; a new request starts a new approval round',
  R6: 'the approvals no longer count (the plan was revised or they expired)',
  R7: 'a rollback needs a reason and the release manager or SRE role',
  R8: 'only a governance admin who did not request the deviation may grant it',
  R9: 'a freeze window is active: nothing that raises exposure may happen',
  R10: 'auditors and viewers can read, never write',
  R11: 'this rollout belongs to a team outside your teams',
  R12: 'every event must carry its actor, team and policy version',
  permission: 'your roles do not allow this action',
};

export function ruleWords(rule) {
  return WORDS[rule] || null;
}

/** One sentence for a refusal: "R2: you cannot approve your own request" plus the detail. */
export function explain(err) {
  if (!err) return 'Something went wrong.';
  const words = err.rule ? ruleWords(err.rule) : null;
  const head = err.rule && words ? `${err.rule}: ${words}` : (err.title || err.message || 'Refused');
  const detail = err.detail && err.detail !== head ? ` (${err.detail})` : '';
  return `${head}${detail}`;
}
