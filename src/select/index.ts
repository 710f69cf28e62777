export { renderTemplate, NO_VALUE } from './template.js';
export { isSubset, matchEndpoints, selectEndpoints, type Selection } from './match.js';
export { RoundRobin } from './round-robin.js';
