// What the whole app shares: who is logged in and what they may do.

export const session = { username: "", role: "viewer" };

const RANK = { viewer: 0, operator: 1, admin: 2 };

export function setSession(principal) {
  session.username = principal.username;
  session.role = principal.role;
}

// Mutating controls are only rendered for operators and admins (the server enforces it too).
export function canOperate() {
  return RANK[session.role] >= RANK.operator;
}

export function isAdmin() {
  return session.role === "admin";
}
