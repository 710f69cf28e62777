export { renderTemplate, NO_VALUE } from './template.js';
export { isSubset, matchEndpoints } from './match.js';
export { RoundRobin } from './round-robin.js';
