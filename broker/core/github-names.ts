// GitHub account names as tokens carry them and policies name them: one pattern for the verifier and the rules.

/**
 * An account (user or organization) name: letters, digits and hyphens, not starting with a hyphen; and the
 * underscore of an Enterprise Managed User, whose name is `handle_shortcode` (e.g. `mona_acme`) and who owns
 * repositories of their own. Case-insensitive, as GitHub compares it. GitHub allows at most 39 characters;
 * the policy rules check that length, the verifier takes the name the issuer signed.
 */
export const GITHUB_OWNER = /^[A-Za-z0-9][A-Za-z0-9_-]*$/;
