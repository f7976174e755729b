"""A readable table of a run's validation and test metrics, from `fit`'s summary."""

from jmed import tasks


def _cell(value) -> str:
  return '-' if value is None else f'{value:.4f}'


def format_summary(summary: dict) -> str:
  """Rows: the task's metrics; columns: validation at the best epoch, test there, test at the
  last step.

  For classification, sensitivity, specificity and F1 are at a 0.5 probability threshold
  (macro over classes or labels where there are more than two) and ECE uses 15 equal-width
  confidence bins; survival's loss is the Cox negative log partial likelihood per event,
  regression's the MSE of standardised targets.
  """
  best = summary.get('best') or {}
  val = best.get('val', {})
  title = (f"{summary['model']} on {summary['dataset']} ({summary['task']}): "
           f"{summary['steps']} steps")
  if best:
    title += f", best epoch {best['epoch']} by {best['metric']}"
    if summary.get('stopped_early'):
      title += ', stopped early'
  lines = [title, f"{'metric':<15} {'val@best':>9} {'test@best':>9} {'test@last':>9}"]
  for name in tasks.get(summary['task']).metric_names:
    lines.append(f'{name:<15} {_cell(val.get(name)):>9} '
                 f"{_cell(summary.get(f'test_{name}')):>9} "
                 f"{_cell(summary.get(f'last_test_{name}')):>9}")
  return '\n'.join(lines)
