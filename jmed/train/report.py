"""A readable table of a run's validation and test metrics, from `fit`'s summary."""

METRICS = ('accuracy', 'auroc', 'auprc', 'sensitivity', 'specificity', 'f1', 'ece', 'loss')
SURVIVAL_METRICS = ('c_index', 'loss')  # loss: Cox negative log partial likelihood per event
REGRESSION_METRICS = ('rmse', 'mae', 'r2', 'loss')  # loss: MSE of standardised targets
TASK_METRICS = {'survival': SURVIVAL_METRICS, 'regression': REGRESSION_METRICS}


def _cell(value) -> str:
  return '-' if value is None else f'{value:.4f}'


def format_summary(summary: dict) -> str:
  """Rows: metrics; columns: validation at the best epoch, test there, test at the last step.

  Sensitivity, specificity and F1 are at a 0.5 probability threshold (macro over classes or
  labels where there are more than two); ECE uses 15 equal-width confidence bins.
  """
  best = summary.get('best') or {}
  val = best.get('val', {})
  title = (f"{summary['model']} on {summary['dataset']} ({summary['task']}): "
           f"{summary['steps']} steps")
  if best:
    title += f", best epoch {best['epoch']} by {best['metric']}"
    if summary.get('stopped_early'):
      title += ', stopped early'
  lines = [title, f"{'metric':<12} {'val@best':>9} {'test@best':>9} {'test@last':>9}"]
  for name in TASK_METRICS.get(summary['task'], METRICS):
    lines.append(f'{name:<12} {_cell(val.get(name)):>9} '
                 f"{_cell(summary.get(f'test_{name}')):>9} "
                 f"{_cell(summary.get(f'last_test_{name}')):>9}")
  return '\n'.join(lines)
