//! The authenticated caller, as an extractor: a handler that takes a [`Caller`] can only
//! run for a request with a valid bearer token.

use std::future::{ready, Ready};

use actix_web::{dev::Payload, http::header, web, FromRequest, HttpRequest};
use rollgate_auth::Principal;
use rollgate_domain::{Actor, ActorId, Role, Team, TeamScope};

use crate::http::problem::Problem;
use crate::state::AppState;

/// Who is calling: the verified token and the domain actor built from it.
#[derive(Clone, Debug)]
pub struct Caller {
    pub principal: Principal,
    pub actor: Actor,
}

impl Caller {
    /// Builds the actor from a verified principal. Roles this service does not know are
    /// ignored (tokens from a shared identity provider carry others); malformed team names
    /// are ignored too, so they can never widen access.
    pub fn from_principal(principal: Principal) -> Result<Self, Problem> {
        let id = ActorId::parse(&principal.sub)
            .map_err(|_| Problem::unauthenticated("the token's `sub` claim is empty"))?;
        let roles: Vec<Role> = principal
            .roles
            .iter()
            .filter_map(|r| Role::parse(r).ok())
            .collect();
        let teams = if principal.teams.iter().any(|t| t == "*") {
            TeamScope::All
        } else {
            TeamScope::Teams(
                principal
                    .teams
                    .iter()
                    .filter_map(|t| Team::parse(t).ok())
                    .collect(),
            )
        };
        Ok(Caller {
            actor: Actor::new(id, roles, teams),
            principal,
        })
    }

    pub fn sub(&self) -> &str {
        &self.principal.sub
    }

    pub fn may_see(&self, team: &Team) -> bool {
        self.actor.may_access(team)
    }

    /// R11 for a team the caller names (a policy, a new rollout): another team's answers
    /// as a team that does not exist.
    pub fn require_team(&self, team: &Team) -> Result<(), Problem> {
        if self.may_see(team) {
            return Ok(());
        }
        Err(rollgate_domain::DomainError::TeamNotAllowed {
            actor: self.actor.id.clone(),
            team: team.clone(),
        }
        .into())
    }
}

impl FromRequest for Caller {
    type Error = Problem;
    type Future = Ready<Result<Self, Problem>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

pub fn authenticate(req: &HttpRequest) -> Result<Caller, Problem> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(Problem::internal)?;
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    let now = state.clock.now().timestamp();
    let principal = state.verifier.verify_authorization(header, now)?;
    Caller::from_principal(principal)
}
